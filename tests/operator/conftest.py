"""Fixtures for operator tests: the real operator as a subprocess (so a test can kill and
restart it), the fake Labelbox speaking to the real SDK, templates and runs in the namespace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lbtrain.kube import MODELRUNS, SECRETS, TRAININGTEMPLATES, KubeClient
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed.controlplane import free_port

from .builders import IMAGE

API_KEY = "test-key-not-a-secret"


@pytest.fixture
def fake_labelbox() -> Iterator[FakeLabelbox]:
    with FakeLabelbox.in_thread(api_key=API_KEY) as fake:
        yield fake


class OperatorProcess:
    """`lbtrain operator` in a subprocess, logging to a file the test can show on failure."""

    def __init__(
        self, plane: ControlPlane, namespace: str, fake: FakeLabelbox, log: Path, extra: list[str]
    ) -> None:
        self.liveness_port, self.metrics_port = free_port(), free_port()
        self.args = [
            sys.executable,
            "-m",
            "lbtrain",
            "operator",
            f"--kubeconfig={plane.kubeconfig}",
            f"--namespace={namespace}",
            f"--labelbox-endpoint={fake.endpoint}",
            f"--labelbox-rest-endpoint={fake.rest_endpoint}",
            f"--liveness-port={self.liveness_port}",
            f"--metrics-port={self.metrics_port}",
            "--resync-interval=2",
            "--report-backoff-max=1",
            "--heartbeat-interval=1",
            "--cancel-report-timeout=5",
            "--watch-timeout=60",
            *extra,
        ]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "LABELBOX_API_KEY": API_KEY, "NO_PROXY": "127.0.0.1,localhost"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=env)

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies under the operator."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def get(self, port: int, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, await resp.text()


@pytest.fixture
def start_operator(
    control_plane: ControlPlane,
    namespace: str,
    fake_labelbox: FakeLabelbox,
    tmp_path: Path,
) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(*extra: str) -> OperatorProcess:
        op = OperatorProcess(
            control_plane, namespace, fake_labelbox, tmp_path / "operator.log", list(extra)
        )
        op.start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
    if started:  # pytest shows this only when the test failed
        print("---- operator log (tail) ----\n" + started[-1].output()[-8000:])


@pytest.fixture
async def lbsecret(kube: KubeClient, namespace: str) -> None:
    await kube.create(
        SECRETS,
        {"metadata": {"name": "lbtrain-labelbox"}, "stringData": {"api-key": API_KEY}},
        namespace,
    )


@pytest.fixture
def make_template(kube: KubeClient, namespace: str) -> Callable[..., Any]:
    async def make(
        model_type: str = "image_single_classification", name: str | None = None, **spec: Any
    ) -> dict[str, Any]:
        body = {
            "metadata": {"name": name or model_type.lower().replace("_", "-")},
            "spec": {
                "modelType": model_type,
                "image": IMAGE,
                "imagePullGracePeriodSeconds": 2,
                **spec,
            },
        }
        return await kube.create(TRAININGTEMPLATES, body, namespace)

    return make


@pytest.fixture
def make_run(kube: KubeClient, namespace: str, fake_labelbox: FakeLabelbox) -> Callable[..., Any]:
    async def make(
        name: str = "run-1",
        model_type: str = "image_single_classification",
        model_run_id: str | None = None,
        register: bool = True,
        **spec: Any,
    ) -> dict[str, Any]:
        run_id = model_run_id or fake_cuid(name)
        if register:  # else the test registered the run with its own data
            fake_labelbox.add_model_run(run_id)
        body = {
            "metadata": {"name": name},
            "spec": {
                "modelRunId": run_id,
                "modelType": model_type,
                "modelId": fake_cuid("model1"),
                **spec,
            },
        }
        return await kube.create(MODELRUNS, body, namespace)

    return make
