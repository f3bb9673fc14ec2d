"""A fake kubelet: drives pods through their lifecycle by patching `pods/status`.

The testbed has no kubelet and no scheduler, so nothing would ever run the pods the Job
controller creates. Kubernetes' own Job integration tests solve this the same way: they write
the pod status a kubelet would write. The builders below produce exactly the shapes a kubelet
reports (init container statuses, container states, termination messages, OOMKilled, eviction's
DisruptionTarget condition), so the operator under test sees what it would see on a cluster.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

from lbtrain.kube import PODS, KubeClient

DEFAULT_NODE = "testbed-node-1"
FAKE_IMAGE_ID = "docker.io/library/fake@sha256:" + "0" * 64


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- pure builders for container statuses ------------------------------------------------------
def waiting(
    name: str, image: str, reason: str = "PodInitializing", message: str = ""
) -> dict[str, Any]:
    state: dict[str, Any] = {"reason": reason}
    if message:
        state["message"] = message
    return {
        "name": name,
        "image": image,
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "started": False,
        "state": {"waiting": state},
    }


def running(name: str, image: str, started_at: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imageID": FAKE_IMAGE_ID,
        "ready": True,
        "restartCount": 0,
        "started": True,
        "containerID": f"containerd://{name}",
        "state": {"running": {"startedAt": started_at or now()}},
    }


def terminated(
    name: str,
    image: str,
    exit_code: int = 0,
    reason: str | None = None,
    message: str = "",
    started_at: str | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
        "startedAt": started_at or now(),
        "finishedAt": now(),
        "containerID": f"containerd://{name}",
    }
    if message:
        state["message"] = message
    return {
        "name": name,
        "image": image,
        "imageID": FAKE_IMAGE_ID,
        "ready": False,
        "restartCount": 0,
        "started": False,
        "state": {"terminated": state},
    }


def condition(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    cond = {"type": type_, "status": status, "lastTransitionTime": now(), "lastProbeTime": None}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _images(pod: dict[str, Any], key: str) -> list[tuple[str, str]]:
    return [(c["name"], c.get("image", "")) for c in pod["spec"].get(key) or []]


class FakeKubelet:
    """Acts as the kubelet (and scheduler) of one namespace's pods, step by step, on demand."""

    def __init__(self, client: KubeClient, namespace: str, node_name: str = DEFAULT_NODE) -> None:
        self.client = client
        self.namespace = namespace
        self.node_name = node_name

    async def pods(self, label_selector: str | None = None) -> list[dict[str, Any]]:
        listing = await self.client.list(PODS, self.namespace, label_selector=label_selector)
        return sorted(listing.get("items", []), key=lambda p: p["metadata"]["creationTimestamp"])

    async def wait_for_pods(
        self,
        label_selector: str | None = None,
        count: int = 1,
        timeout: float = 30.0,
        *,
        pending_only: bool = False,
    ) -> list[dict[str, Any]]:
        """Wait until at least `count` pods match; answer them, oldest first."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            pods = await self.pods(label_selector)
            if pending_only:
                pods = [
                    p
                    for p in pods
                    if (p.get("status") or {}).get("phase", "Pending") == "Pending"
                    and not p["metadata"].get("deletionTimestamp")
                ]
            if len(pods) >= count:
                return pods
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"expected {count} pod(s) matching {label_selector!r} in {self.namespace}, "
                    f"found {len(pods)} after {timeout}s"
                )
            await asyncio.sleep(0.1)

    async def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        return await self.client.patch(
            PODS, pod["metadata"]["name"], {"status": status}, self.namespace, subresource="status"
        )

    async def schedule(self, pod: dict[str, Any]) -> dict[str, Any]:
        """Bind the pod to the fake node, as the scheduler would."""
        name = pod["metadata"]["name"]
        if not pod["spec"].get("nodeName"):
            await self.client.request(
                "POST",
                PODS.path(self.namespace, name) + "/binding",
                body={
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
                },
            )
        return await self._patch_status(pod, {"conditions": [condition("PodScheduled", "True")]})

    async def unschedulable(self, pod: dict[str, Any], message: str) -> dict[str, Any]:
        return await self._patch_status(
            pod,
            {
                "phase": "Pending",
                "conditions": [condition("PodScheduled", "False", "Unschedulable", message)],
            },
        )

    async def run_stage(self, pod: dict[str, Any], stage: str) -> dict[str, Any]:
        """Report `stage` running: earlier init containers Completed, later ones waiting."""
        return await self._set_progress(pod, stage, running_stage=True)

    async def wait_in(
        self, pod: dict[str, Any], container: str, reason: str, message: str = ""
    ) -> dict[str, Any]:
        """Report `container` waiting with `reason` (ImagePullBackOff, CrashLoopBackOff...)."""
        inits, mains = _images(pod, "initContainers"), _images(pod, "containers")

        def one(n: str, img: str) -> dict[str, Any]:
            return waiting(n, img, reason, message) if n == container else waiting(n, img)

        return await self._patch_status(
            pod,
            {
                "phase": "Pending",
                "hostIP": "10.0.0.10",
                "podIP": "10.1.0.10",
                "startTime": now(),
                "conditions": [condition("PodScheduled", "True")],
                "initContainerStatuses": [one(n, i) for n, i in inits],
                "containerStatuses": [one(n, i) for n, i in mains],
            },
        )

    async def _set_progress(
        self, pod: dict[str, Any], stage: str, running_stage: bool
    ) -> dict[str, Any]:
        inits, mains = _images(pod, "initContainers"), _images(pod, "containers")
        names = [n for n, _ in inits] + [n for n, _ in mains]
        if stage not in names:
            raise ValueError(f"pod {pod['metadata']['name']} has no container {stage!r}: {names}")
        idx = names.index(stage)

        def status(pos: int, name: str, image: str) -> dict[str, Any]:
            if pos < idx:
                return terminated(name, image, 0)
            if pos == idx and running_stage:
                return running(name, image)
            return waiting(name, image)

        init_statuses = [status(i, n, img) for i, (n, img) in enumerate(inits)]
        main_statuses = [status(len(inits) + i, n, img) for i, (n, img) in enumerate(mains)]
        in_main = idx >= len(inits)
        return await self._patch_status(
            pod,
            {
                "phase": "Running" if in_main else "Pending",
                "hostIP": "10.0.0.10",
                "podIP": "10.1.0.10",
                "startTime": now(),
                "conditions": [
                    condition("PodScheduled", "True"),
                    condition("Initialized", "True" if in_main else "False"),
                    condition("Ready", "True" if in_main else "False"),
                ],
                "initContainerStatuses": init_statuses,
                "containerStatuses": main_statuses,
            },
        )

    async def succeed(self, pod: dict[str, Any], message: str = "") -> dict[str, Any]:
        """Every container ran and exited 0; the main container wrote `message`."""
        inits, mains = _images(pod, "initContainers"), _images(pod, "containers")
        return await self._patch_status(
            pod,
            {
                "phase": "Succeeded",
                "conditions": [
                    condition("PodScheduled", "True"),
                    condition("Initialized", "True"),
                    condition("Ready", "False", "PodCompleted"),
                ],
                "initContainerStatuses": [terminated(n, i) for n, i in inits],
                "containerStatuses": [terminated(n, i, 0, message=message) for n, i in mains],
            },
        )

    async def fail(
        self,
        pod: dict[str, Any],
        container: str | None = None,
        *,
        exit_code: int = 1,
        reason: str = "Error",
        message: str = "",
    ) -> dict[str, Any]:
        """`container` (the main one by default) exited non-zero; the pod phase becomes Failed."""
        inits, mains = _images(pod, "initContainers"), _images(pod, "containers")
        target = container or mains[0][0]
        names = [n for n, _ in inits] + [n for n, _ in mains]
        idx = names.index(target)

        def status(pos: int, name: str, image: str) -> dict[str, Any]:
            if pos < idx:
                return terminated(name, image, 0)
            if pos == idx:
                return terminated(name, image, exit_code, reason, message)
            return waiting(name, image)

        return await self._patch_status(
            pod,
            {
                "phase": "Failed",
                "conditions": [
                    condition("PodScheduled", "True"),
                    condition("Ready", "False", "PodFailed"),
                ],
                "initContainerStatuses": [status(i, n, img) for i, (n, img) in enumerate(inits)],
                "containerStatuses": [
                    status(len(inits) + i, n, img) for i, (n, img) in enumerate(mains)
                ],
            },
        )

    async def evict(
        self,
        pod: dict[str, Any],
        reason: str = "EvictionByEvictionAPI",
        message: str = "Eviction API: evicting",
    ) -> dict[str, Any]:
        """The pod was evicted or preempted: a DisruptionTarget condition, then phase Failed."""
        mains = _images(pod, "containers")
        return await self._patch_status(
            pod,
            {
                "phase": "Failed",
                "reason": "Evicted" if reason == "TerminationByKubelet" else None,
                "message": message,
                "conditions": [
                    condition("DisruptionTarget", "True", reason, message),
                    condition("Ready", "False", "PodFailed"),
                ],
                "containerStatuses": [terminated(n, i, 137, "Error") for n, i in mains],
            },
        )

    async def complete_all(
        self, label_selector: str | None = None, count: int = 1, stages: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Schedule, run through `stages`, and succeed `count` pods: the happy path in one call."""
        pods = await self.wait_for_pods(label_selector, count)
        for pod in pods[:count]:
            await self.schedule(pod)
            for stage in stages:
                await self.run_stage(pod, stage)
            await self.succeed(pod)
        return pods
