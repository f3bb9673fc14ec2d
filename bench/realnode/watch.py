"""What the real-node bench's watches see: each run's marks, stamped on arrival.

Every mark (ModelRun seen, Job seen, pod seen, bound, `export`/`prepare`/`train` running) is
the first watch event that shows it, on this machine's monotonic clock; the phases the summary
reports are the gaps between consecutive marks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from lbtrain import contract
from lbtrain.kube import JOBS, MODELRUNS, ApiError, ApiUnreachable, KubeClient, Resource

ANNOTATION_RUN_ID = "lbtrain.io/model-run-id"  # on the operator's Job and pod template


@dataclass
class Run:
    kind: str
    run_id: str
    marks: dict[str, float] = field(default_factory=dict)
    failure: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    pod: str | None = None
    cleanup_s: float = 0.0
    cleanup_note: str = ""

    def mark(self, name: str, now: float) -> None:
        self.marks.setdefault(name, now)

    @property
    def total(self) -> float:
        return self.marks["train"] - self.marks["post"]


def _started(statuses: list[dict[str, Any]], name: str) -> bool:
    """The container runs or has run (an init container may finish between two status reports)."""
    for status in statuses:
        if status.get("name") == name:
            state = status.get("state") or {}
            return "running" in state or "terminated" in state
    return False


def _pod_failure(pod: dict[str, Any]) -> str | None:
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return f"pod failed: {status.get('reason')} {status.get('message')}"
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        term = state.get("terminated")
        if term and term.get("exitCode"):
            return f"container {cs['name']} exited {term['exitCode']}: {term.get('message', '')}"
        waiting = (state.get("waiting") or {}).get("reason", "")
        if waiting in ("ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError"):
            return f"container {cs['name']} waits: {waiting}"
    return None


class Recorder:
    """Timestamps, on this machine's monotonic clock, the first watch event of each mark."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}  # by modelRunId

    def observe(self, res: Resource, obj: dict[str, Any], now: float) -> None:
        meta = obj.get("metadata") or {}
        if res is MODELRUNS:
            run = self.runs.get((obj.get("spec") or {}).get("modelRunId", ""))
            if run:
                run.mark("modelrun", now)
            return
        run = self.runs.get((meta.get("annotations") or {}).get(ANNOTATION_RUN_ID, ""))
        if run is None:
            return
        if res is JOBS:
            run.mark("job", now)
            return
        run.pod = meta.get("name")
        run.mark("pod", now)
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        if spec.get("nodeName"):
            run.mark("bound", now)
        inits = status.get("initContainerStatuses") or []
        for stage in (contract.STAGE_EXPORT, contract.STAGE_PREPARE):
            if _started(inits, stage):
                run.mark(stage, now)
        for cs in status.get("containerStatuses") or []:
            if cs.get("name") == contract.STAGE_TRAIN and "running" in (cs.get("state") or {}):
                run.mark("train", now)
                run.done.set()
        failure = _pod_failure(obj)
        if failure and not run.done.is_set():
            run.failure = failure
            run.done.set()


async def watch_forever(
    kube: KubeClient, res: Resource, namespace: str, recorder: Recorder
) -> None:
    """Feed every event of `res` in the namespace to the recorder until cancelled; re-lists on
    410 Gone and reconnects (at most 1,000 times) when a watch ends."""
    version: str | None = None
    for _ in range(1000):
        try:
            if version is None:
                listed = await kube.list(res, namespace)
                now = time.monotonic()
                for item in listed.get("items") or []:
                    recorder.observe(res, item, now)
                version = listed["metadata"]["resourceVersion"]
            async for event in kube.watch(
                res, namespace, resource_version=version, timeout_seconds=240
            ):
                if event.type == "BOOKMARK":
                    version = event.object["metadata"]["resourceVersion"]
                    continue
                recorder.observe(res, event.object, time.monotonic())
                version = event.object["metadata"].get("resourceVersion", version)
        except ApiError as exc:
            if exc.status == 410:
                version = None
            else:
                await asyncio.sleep(1)
        except ApiUnreachable:
            await asyncio.sleep(1)
    raise RuntimeError(f"the {res.plural} watch ended 1,000 times")
