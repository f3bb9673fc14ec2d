"""The TrainingTemplates of the webhook's namespace, kept in memory by a list + watch.

`GET /models` is answered from here with no API call: the answer is rendered once per change.
The loop lists (remembering the resourceVersion), watches from it, resumes after a normal watch
timeout, re-lists after 410 Gone or any error, and backs off (with jitter, capped) while the API
server cannot be reached. Until the first list succeeds the cache is not `synced` and the
webhook is not ready; after that a disconnection keeps serving the last known templates.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lbtrain.kube import TRAININGTEMPLATES, ApiError, ApiUnreachable, KubeClient
from lbtrain.logs import get_logger

log = get_logger("lbtrain.webhook.templates")


@dataclass(frozen=True)
class TemplateEntry:
    name: str  # the TrainingTemplate object's name (a DNS name)
    model_type: str  # spec.modelType: the name Labelbox shows, byte for byte
    description: str


def entry_from_object(obj: Mapping[str, Any]) -> TemplateEntry | None:
    """The fields GET /models needs, or None for an object without a usable spec.modelType."""
    name = (obj.get("metadata") or {}).get("name")
    spec = obj.get("spec") or {}
    model_type = spec.get("modelType")
    if not isinstance(name, str) or not isinstance(model_type, str) or not model_type:
        return None
    description = spec.get("description")
    return TemplateEntry(name, model_type, description if isinstance(description, str) else "")


def models_answer(entries: Iterable[TemplateEntry]) -> dict[str, dict[str, str]]:
    """`{modelType: {"description": ...}}`; when two templates claim one model type, the one
    whose object name sorts first wins (deterministic, and logged by the cache)."""
    answer: dict[str, dict[str, str]] = {}
    for entry in sorted(entries, key=lambda e: e.name):
        answer.setdefault(entry.model_type, {"description": entry.description})
    return dict(sorted(answer.items()))


class TemplateCache:
    """Watch-backed view of the namespace's TrainingTemplates."""

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        *,
        watch_timeout_seconds: int = 240,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        on_change: Callable[[TemplateCache], None] | None = None,
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._watch_timeout = watch_timeout_seconds
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._on_change = on_change
        self._entries: dict[str, TemplateEntry] = {}
        self._resource_version: str | None = None
        self._answer: dict[str, dict[str, str]] = {}
        self._body = b"{}"
        self._known: frozenset[str] = frozenset()
        self._synced = asyncio.Event()
        self.connected = False
        self.last_error: str | None = None

    # --- reading ---------------------------------------------------------------------------------
    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    @property
    def ready(self) -> bool:
        return self.synced and self.connected

    def models(self) -> dict[str, dict[str, str]]:
        return self._answer

    def body(self) -> bytes:
        """The `GET /models` answer, already rendered."""
        return self._body

    def known_types(self) -> frozenset[str]:
        return self._known

    def __len__(self) -> int:
        return len(self._entries)

    async def wait_synced(self, timeout: float) -> None:
        await asyncio.wait_for(self._synced.wait(), timeout)

    # --- keeping it current ---------------------------------------------------------------------
    def _changed(self) -> None:
        answer = models_answer(self._entries.values())
        if answer != self._answer:
            owners: dict[str, list[str]] = {}
            for entry in self._entries.values():
                owners.setdefault(entry.model_type, []).append(entry.name)
            for model_type, names in owners.items():
                if len(names) > 1:
                    log.warning(
                        "several TrainingTemplates serve one model type; using the first by name",
                        extra={"model_type": model_type, "templates": sorted(names)},
                    )
            self._answer = answer
            self._known = frozenset(answer)
            self._body = json.dumps(answer, ensure_ascii=False).encode()
            log.info("model types changed", extra={"model_types": sorted(answer)})
        if self._on_change is not None:
            self._on_change(self)

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """Apply one watch event (ADDED, MODIFIED, DELETED, BOOKMARK) to the cache."""
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if isinstance(rv, str) and rv:
            self._resource_version = rv
        if event_type == "BOOKMARK":
            return
        name = (obj.get("metadata") or {}).get("name")
        if not isinstance(name, str):
            return
        entry = entry_from_object(obj)
        if event_type == "DELETED" or entry is None:
            self._entries.pop(name, None)
        else:
            self._entries[name] = entry
        self._changed()

    async def relist(self) -> None:
        doc = await self._kube.list(TRAININGTEMPLATES, self._namespace)
        entries = (entry_from_object(item) for item in doc.get("items") or [])
        self._entries = {e.name: e for e in entries if e is not None}
        self._resource_version = str((doc.get("metadata") or {}).get("resourceVersion") or "")
        self.connected = True
        self.last_error = None
        self._synced.set()
        self._changed()

    async def run(self) -> None:
        """List and watch until cancelled; never raises anything else."""
        backoff = self._backoff_initial
        relist = True
        while True:
            try:
                if relist:
                    await self.relist()
                    relist = False
                opened = asyncio.get_running_loop().time()
                async for event in self._kube.watch(
                    TRAININGTEMPLATES,
                    self._namespace,
                    resource_version=self._resource_version,
                    timeout_seconds=self._watch_timeout,
                ):
                    self.apply(event.type, event.object)
                # A normal end of the watch (its timeout): resume from the resourceVersion at
                # once, unless it ended suspiciously fast (then pace it like a failure).
                if asyncio.get_running_loop().time() - opened > 1.0:
                    backoff = self._backoff_initial
                    continue
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                relist = True
                if exc.status == 410:  # our resourceVersion is too old: start over at once
                    log.info("template watch expired (410); re-listing")
                    continue
                self._lost(f"{exc.status} {exc.reason}: {exc.message[:300]}")
            except ApiUnreachable as exc:
                relist = True
                self._lost(str(exc)[:300])
            except Exception as exc:  # a malformed event or a client bug: keep the loop alive
                relist = True
                self._lost(f"{type(exc).__name__}: {str(exc)[:300]}")
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self._backoff_max)

    def _lost(self, why: str) -> None:
        if self.connected or self.last_error is None:
            log.warning(
                "TrainingTemplate watch failed; retrying with backoff",
                extra={"namespace": self._namespace, "error": why},
            )
        self.connected = False
        self.last_error = why
        if self._on_change is not None:
            self._on_change(self)
