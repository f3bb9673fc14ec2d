"""`realnode_bench.py --smoke`: the bench's own code path, where there is no node to run it on.

`make test` has no root, no containerd and no images for a bench, but the bench must still be
run there so that it cannot rot. Only what needs the node is stood in for:

- the chart's webhook and operator pods: `lbtrain webhook` and `lbtrain operator` as local
  processes with the chart's settings that matter here (namespace, secret, Labelbox endpoints),
  and the TrainingTemplate the chart would install;
- the node: `FakeKubelet` binds each trainer pod and reports `export`, `prepare` and `train`
  running as the kubelet would, and ends the deletions a kubelet would confirm.

The signed POST, the watches, the Job copied for the bare run, the cleanup and the summary are
the real run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.lib.kube import Follower
from bench.lib.net import free_port
from bench.lib.operator import API_KEY, Operator
from bench.lib.testbed import control_plane
from lbtrain.kube import (
    PODS,
    SECRETS,
    TRAININGTEMPLATES,
    ApiError,
    ApiUnreachable,
    KubeClient,
    load_config,
)
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.testbed import ControlPlane


async def _prepare(kubeconfig: Path, namespace: str, template: dict[str, Any]) -> None:
    async with KubeClient(load_config(str(kubeconfig))) as kube:
        secret = {"metadata": {"name": "lbtrain-labelbox"}, "stringData": {"api-key": API_KEY}}
        await kube.create(SECRETS, secret, namespace)
        await kube.create(TRAININGTEMPLATES, template, namespace)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lbtrain webhook exited {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "/readyz", timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("lbtrain webhook did not become ready")


@contextlib.contextmanager
def smoke_cluster(
    namespace: str, template: dict[str, Any], secret: str, work: Path
) -> Iterator[tuple[ControlPlane, FakeLabelbox, str]]:
    """A control plane without a node, the fake Labelbox, the webhook and the operator; answers
    them and the webhook's URL."""
    with (
        control_plane(prefix="lbtrain-realnode-smoke-") as plane,
        FakeLabelbox.in_thread(api_key=API_KEY) as labelbox,
    ):
        plane.kubectl("create", "namespace", namespace, check=True)
        asyncio.run(_prepare(plane.kubeconfig, namespace, template))
        port = free_port()
        argv = [sys.executable, "-m", "lbtrain", "webhook", f"--namespace={namespace}"]
        argv += [f"--kubeconfig={plane.kubeconfig}", "--host=127.0.0.1", f"--port={port}"]
        argv += ["--metrics-port=0"]
        env = {**os.environ, "LBTRAIN_WEBHOOK_SECRET": secret, "NO_PROXY": "127.0.0.1,localhost"}
        with (work / "webhook.log").open("ab") as out:
            webhook = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        operator = Operator(plane.kubeconfig, namespace, labelbox, work / "operator.log")
        operator.start()
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, webhook)
            yield plane, labelbox, url
        finally:
            operator.stop()
            webhook.terminate()
            webhook.wait(30)


async def smoke_node(kube: KubeClient, namespace: str, stages: tuple[str, ...]) -> None:
    """The node's part, until cancelled: each new pod bound and walked through `stages` (the
    last left running), each pod being deleted removed at once (no kubelet confirms it)."""
    from lbtrain_dev.testbed.fake_kubelet import FakeKubelet

    kubelet = FakeKubelet(kube, namespace)
    started: set[str] = set()
    todo: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def seen(pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        if pod["metadata"].get("deletionTimestamp"):
            todo.put_nowait(("delete", pod))
        elif name not in started:
            started.add(name)
            todo.put_nowait(("run", pod))

    follower = asyncio.create_task(Follower(kube, PODS, namespace, seen).run())
    try:
        while True:
            action, pod = await todo.get()
            with contextlib.suppress(ApiError, ApiUnreachable):  # gone meanwhile: nothing to do
                if action == "delete":
                    name = pod["metadata"]["name"]
                    await kube.delete(PODS, name, namespace, grace_period_seconds=0)
                    continue
                pod = await kubelet.schedule(pod)
                for stage in stages:
                    pod = await kubelet.run_stage(pod, stage)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, ApiError, ApiUnreachable):
            await follower
