"""The fake kubelet of the operator bench, in its own process so its CPU is not the bench's.

Plays scheduler and kubelet for one namespace's pods once told to go: every pod is bound, runs
its export, prepare and train stages, and succeeds (`FakeKubelet`, the same steps the tests
use). It answers when it first saw each pod and when it was done with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from bench.lib.aio import with_retry
from bench.lib.kube import Follower
from lbtrain.kube import PODS, ApiError, ApiUnreachable, KubeClient, load_config


def kubelet_process(
    kubeconfig: str, ns: str, n: int, concurrency: int, go: Event, out: Queue[dict[str, Any]]
) -> None:
    """The process's target: drive `n` pods once `go` is set, then put the times on `out`."""
    out.put(asyncio.run(_drive(kubeconfig, ns, n, concurrency, go)))


async def _drive(kubeconfig: str, ns: str, n: int, concurrency: int, go: Event) -> dict[str, Any]:
    from lbtrain_dev.testbed.fake_kubelet import FakeKubelet

    seen: dict[str, float] = {}
    done: dict[str, float] = {}
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    errors: list[str] = []

    def on_pod(pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        if name not in seen and (pod.get("status") or {}).get("phase", "Pending") == "Pending":
            seen[name] = time.monotonic()
            queue.put_nowait(pod)

    async with KubeClient(load_config(kubeconfig), request_timeout=60) as kube:
        kubelet = FakeKubelet(kube, ns)
        watcher = asyncio.create_task(Follower(kube, PODS, ns, on_pod).run())
        await asyncio.to_thread(go.wait)
        started = time.monotonic()

        async def run_pod(pod: dict[str, Any]) -> None:
            steps: list[Callable[[], Awaitable[Any]]] = [
                lambda: kubelet.schedule(pod),
                lambda: kubelet.run_stage(pod, "export"),
                lambda: kubelet.run_stage(pod, "prepare"),
                lambda: kubelet.run_stage(pod, "train"),
                lambda: kubelet.succeed(pod, message=json.dumps({"accuracy": 0.9})),
            ]
            for step in steps:
                await with_retry(step)

        async def worker() -> None:
            while len(done) < n:
                try:
                    pod = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    continue
                try:
                    await run_pod(pod)
                except (ApiError, ApiUnreachable) as exc:
                    errors.append(f"{pod['metadata']['name']}: {exc}")
                done[pod["metadata"]["name"]] = time.monotonic()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, ApiError, ApiUnreachable):
            await watcher
    return {"seen": seen, "done": done, "started": started, "errors": errors[:20]}
