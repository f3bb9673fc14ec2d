"""An in-memory view of every Job and pod that belongs to a ModelRun, kept current by one
label-selected list+watch per kind and namespace, which also wakes the run's daemon.

Why not ask the API server on each pass: a pass used to GET its Job and LIST its pods, and a
LIST with a label selector makes the API server filter every pod of the namespace, so N runs
cost O(N²) work on the server exactly when it is busiest (a burst of new runs). Why not kopf's
`on.event` handlers for pods and Jobs: kopf deep-copies every event's whole body to compute a
diff we never use (a third of the operator's CPU in a profile under load). One watch per kind
does both jobs: it keeps the objects, trimmed to the fields `podstate` reads, and tells the
run's daemon that something changed.

The store can lag behind the server (an object this operator just created may not be in it
yet); `reconcile` falls back to a GET when the Job it expects is missing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lbtrain.kube import KubeClient, Resource
from lbtrain.kube.reflector import Reflector
from lbtrain.resources.names import LABEL_MODEL_RUN

log = logging.getLogger("lbtrain.operator")

RunKey = tuple[str, str]  # (namespace, ModelRun name)
OnChange = Callable[[RunKey], None]

# Metadata kept for every object: identity, ownership and the annotations the operator wrote.
_META_KEPT = (
    "name",
    "namespace",
    "uid",
    "labels",
    "annotations",
    "ownerReferences",
    "creationTimestamp",
    "deletionTimestamp",
    "resourceVersion",
)
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 30.0


def run_key(obj: Mapping[str, Any]) -> RunKey | None:
    """The run an object belongs to, from the label the Job and its pod template carry."""
    meta = obj.get("metadata") or {}
    run = (meta.get("labels") or {}).get(LABEL_MODEL_RUN)
    return (meta.get("namespace") or "default", run) if run else None


def trim(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """What a pass reads of a pod or Job: metadata, the status, and for a pod its node, for a
    Job its spec without the pod template (the largest part, which the pass never reads)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    if kind == "Pod":
        kept_spec = {"nodeName": spec["nodeName"]} if spec.get("nodeName") else {}
    else:
        kept_spec = {k: v for k, v in spec.items() if k != "template"}
    return {
        "metadata": {k: meta[k] for k in _META_KEPT if k in meta},
        "spec": kept_spec,
        "status": obj.get("status") or {},
    }


class RunObjects:
    """Jobs and pods by run. Written only by the informers; read by reconcile passes."""

    def __init__(self, on_change: OnChange | None = None) -> None:
        self._jobs: dict[RunKey, dict[str, Any]] = {}
        self._pods: dict[RunKey, dict[str, dict[str, Any]]] = {}
        self._on_change = on_change
        self._pending_syncs = 0
        self.synced = asyncio.Event()

    # --- reads ---------------------------------------------------------------------------------
    def job(self, key: RunKey) -> dict[str, Any] | None:
        return self._jobs.get(key)

    def pods(self, key: RunKey) -> list[dict[str, Any]]:
        return list(self._pods.get(key, {}).values())

    def __len__(self) -> int:
        return len(self._jobs) + sum(len(p) for p in self._pods.values())

    # --- writes (informers) --------------------------------------------------------------------
    def expect_sync(self) -> None:
        """One more informer must list before the store counts as synced."""
        self._pending_syncs += 1
        self.synced.clear()

    def mark_synced(self) -> None:
        self._pending_syncs = max(0, self._pending_syncs - 1)
        if self._pending_syncs == 0:
            self.synced.set()

    def apply(self, kind: str, event_type: str, obj: Mapping[str, Any]) -> RunKey | None:
        """Fold one watch event in; answer the run it concerns (None: not a run's object)."""
        key = run_key(obj)
        if key is None:
            return None
        name = (obj.get("metadata") or {}).get("name", "")
        if kind == "Job":
            if event_type == "DELETED":
                if (self._jobs.get(key) or {}).get("metadata", {}).get("name") == name:
                    del self._jobs[key]
            else:
                self._jobs[key] = trim(kind, obj)
        else:
            pods = self._pods.setdefault(key, {})
            if event_type == "DELETED":
                pods.pop(name, None)
                if not pods:
                    del self._pods[key]
            else:
                pods[name] = trim(kind, obj)
        self._changed(key)
        return key

    def replace(self, kind: str, namespace: str | None, items: Iterable[Mapping[str, Any]]) -> None:
        """A fresh listing of `kind` in `namespace` (None: all) replaces what was held; runs
        whose objects appeared, changed or vanished are told."""
        in_scope = [
            k for k in (self._jobs if kind == "Job" else self._pods) if namespace in (None, k[0])
        ]
        before = {k: self._fingerprint(kind, k) for k in in_scope}
        for k in in_scope:
            (self._jobs if kind == "Job" else self._pods).pop(k, None)
        for obj in items:
            key = run_key(obj)
            if key is None:
                continue
            if kind == "Job":
                self._jobs[key] = trim(kind, obj)
            else:
                self._pods.setdefault(key, {})[obj["metadata"]["name"]] = trim(kind, obj)
        now = set(self._jobs if kind == "Job" else self._pods)
        for key in set(before) | {k for k in now if namespace in (None, k[0])}:
            if before.get(key) != self._fingerprint(kind, key):
                self._changed(key)

    def _fingerprint(self, kind: str, key: RunKey) -> tuple[str, ...]:
        if kind == "Job":
            job = self._jobs.get(key)
            return (job["metadata"].get("resourceVersion", ""),) if job else ()
        return tuple(sorted(p["metadata"].get("resourceVersion", "") for p in self.pods(key)))

    def _changed(self, key: RunKey) -> None:
        if self._on_change is not None:
            self._on_change(key)


class Informer:
    """Lists, then watches, one kind in one namespace (None: cluster-wide) into a RunObjects,
    through the shared list + watch loop (`lbtrain.kube.reflector`: 410 re-lists, jittered
    capped backoff). `last_contact` says when the API server last answered, for the liveness
    probe."""

    def __init__(
        self,
        kube: KubeClient,
        resource: Resource,
        namespace: str | None,
        store: RunObjects,
        *,
        watch_timeout_s: int = 300,
    ) -> None:
        self.resource, self.namespace, self.store = resource, namespace, store
        self._listed_once = False
        self.reflector = Reflector(
            kube,
            resource,
            namespace,
            on_list=self._listed,
            on_event=lambda type_, obj: store.apply(resource.kind, type_, obj),
            label_selector=LABEL_MODEL_RUN,
            watch_timeout_s=watch_timeout_s,
            backoff_initial_s=RETRY_INITIAL_S,
            backoff_max_s=RETRY_MAX_S,
        )
        store.expect_sync()

    @property
    def where(self) -> str:
        return self.reflector.where

    @property
    def last_contact(self) -> float:
        return self.reflector.last_contact

    async def run(self) -> None:
        await self.reflector.run()

    def _listed(self, items: Sequence[Mapping[str, Any]]) -> None:
        self.store.replace(self.resource.kind, self.namespace, items)
        if not self._listed_once:
            self._listed_once = True
            self.store.mark_synced()

    def check(self, stale_after_s: float) -> None:
        """Raise when the API server has not answered this informer for `stale_after_s`."""
        silent = self.reflector.silent_for()
        if silent > stale_after_s:
            raise RuntimeError(f"watch of {self.where} silent for {silent:.0f}s")
