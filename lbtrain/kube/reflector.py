"""One list + watch loop, shared by every in-memory view of the API server.

The webhook keeps its TrainingTemplates this way and the operator its Jobs and pods; they used
to have a loop each, with different backoff (one jittered, one not) and different handling of a
watch that ends at once. A Reflector (client-go's word for the same thing) owns the loop and
nothing else; what is kept, and what a change wakes, is its owner's business (`on_list`,
`on_event`).

The loop: list (remembering the resourceVersion), watch from it, resume from the last event's
resourceVersion when the server ends the watch on time, list again at once after 410 Gone (the
version was compacted away), and after any other failure list again after a jittered, capped,
doubling backoff. A watch that ends within a second of opening is paced like a failure, so a
server that closes every watch at once is not hammered. `last_contact` says when the API server
last answered (liveness probes read it); `connected` and `last_error` say whether it answers now
(readiness reads them).

Why re-list after an ordinary failure instead of resuming from the version: a watch that opens
again produces no event until something changes, so only a listing proves the view is whole and
the server reachable again; one LIST per outage is cheap.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lbtrain.kube.client import KubeClient
from lbtrain.kube.errors import ApiError, ApiUnreachable
from lbtrain.kube.resources import Resource

log = logging.getLogger("lbtrain.kube.reflector")

OnList = Callable[[Sequence[Mapping[str, Any]]], None]
OnEvent = Callable[[str, Mapping[str, Any]], object]  # what it answers is ignored
OnState = Callable[[], None]
QUICK_END_S = 1.0  # a watch that ends sooner than this is paced like a failure
ERROR_CHARS = 300


class Reflector:
    """List, then watch, one kind in one namespace (None: all), handing what it learns on.

    `on_list(items)` gets every listing (the first and each re-list) and must replace what its
    owner held; `on_event(type, object)` gets each ADDED, MODIFIED and DELETED event;
    `on_state()` is called when `connected` changes or a failure is recorded.
    """

    def __init__(
        self,
        kube: KubeClient,
        resource: Resource,
        namespace: str | None,
        *,
        on_list: OnList,
        on_event: OnEvent,
        on_state: OnState | None = None,
        label_selector: str | None = None,
        watch_timeout_s: int = 240,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.kube, self.resource, self.namespace = kube, resource, namespace
        self._on_list, self._on_event, self._on_state = on_list, on_event, on_state
        self.label_selector = label_selector
        self.watch_timeout_s = watch_timeout_s
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.connected = False
        self.last_error: str | None = None
        self.last_contact = time.monotonic()
        self.lists = 0

    @property
    def where(self) -> str:
        return f"{self.resource.plural} in {self.namespace or 'all namespaces'}"

    def silent_for(self) -> float:
        """Seconds since the API server last answered this reflector."""
        return time.monotonic() - self.last_contact

    async def relist(self) -> None:
        listing = await self.kube.list(
            self.resource, self.namespace, label_selector=self.label_selector
        )
        self.last_contact = time.monotonic()
        self.resource_version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
        self.lists += 1
        self._on_list(listing.get("items") or [])
        was_connected, self.connected, self.last_error = self.connected, True, None
        self.synced.set()
        if not was_connected:
            self._state_changed()

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """One watch event: remember its version and hand object events on."""
        self.last_contact = time.monotonic()
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if isinstance(rv, str) and rv:
            self.resource_version = rv
        if event_type in ("ADDED", "MODIFIED", "DELETED"):
            self._on_event(event_type, obj)

    async def run(self) -> None:
        """List and watch until cancelled; never raises anything else."""
        backoff = self.backoff_initial_s
        must_list = True
        while True:
            try:
                if must_list:
                    await self.relist()
                    must_list = False
                opened = time.monotonic()
                async for event in self.kube.watch(
                    self.resource,
                    self.namespace,
                    resource_version=self.resource_version,
                    timeout_seconds=self.watch_timeout_s,
                    label_selector=self.label_selector,
                ):
                    self.apply(event.type, event.object)
                self.last_contact = time.monotonic()  # the server ended the watch on time
                if time.monotonic() - opened > QUICK_END_S:
                    backoff = self.backoff_initial_s
                    continue
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                must_list = True
                if exc.status == 410:  # our resourceVersion is too old: start over at once
                    log.info("watch expired (410); listing again", extra={"watch": self.where})
                    continue
                self._lost(f"{exc.status} {exc.reason}: {exc.message[:ERROR_CHARS]}")
            except ApiUnreachable as exc:
                must_list = True
                self._lost(str(exc)[:ERROR_CHARS])
            except Exception as exc:  # a malformed event or an owner's bug: keep the loop alive
                must_list = True
                self._lost(f"{type(exc).__name__}: {str(exc)[:ERROR_CHARS]}")
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self.backoff_max_s)

    def _lost(self, why: str) -> None:
        if self.connected or self.last_error is None:  # once per outage, not once per retry
            log.warning(
                "watch failed; retrying with backoff", extra={"watch": self.where, "error": why}
            )
        self.connected = False
        self.last_error = why
        self._state_changed()

    def _state_changed(self) -> None:
        if self._on_state is not None:
            self._on_state()
