"""`lbtrain operator` as the benches run it, and the objects it is fed.

A subprocess with its default flags (JSON logs to a file), watching one namespace that holds one
TrainingTemplate and the `lbtrain-labelbox` Secret, talking to a fake Labelbox through the real
SDK. The ModelRuns are built as the webhook builds them (`build_model_run`), so the operator
sees exactly what a Labelbox request would give it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from lbtrain.kube import SECRETS, TRAININGTEMPLATES, KubeClient
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid

REPO = Path(__file__).resolve().parents[2]
API_KEY = "bench-key-not-a-secret"
MODEL_TYPE = "image_single_classification"
TEMPLATE = {
    "metadata": {"name": "bench-template"},
    "spec": {"modelType": MODEL_TYPE, "image": "ghcr.io/lbtrain/trainer:bench", "gpus": 1},
}


def run_name(i: int) -> str:
    return f"run-{i:05d}"


def run_body(
    i: int, run_id: str, model_type: str = MODEL_TYPE, *, for_operator: bool = True
) -> dict[str, Any]:
    """A ModelRun as the webhook builds it for a Labelbox request, named `run_name(i)`.
    `run_id` must be a Labelbox id (`bench.lib.ids`). Without `for_operator` it has no
    finalizer: no operator watches such a namespace, and deleting it must not wait for one."""
    from lbtrain_webhook.modelruns import build_model_run
    from lbtrain_webhook.payload import ModelRunRequest

    body = build_model_run(ModelRunRequest(run_id, model_type, fake_cuid("bench-model")))
    body["metadata"]["name"] = run_name(i)
    if not for_operator:
        del body["metadata"]["finalizers"]
    return body


async def prepare_namespace(kube: KubeClient, ns: str) -> dict[str, Any]:
    """The Secret the operator reads its Labelbox key from, and the template; answers it."""
    secret = {"metadata": {"name": "lbtrain-labelbox"}, "stringData": {"api-key": API_KEY}}
    await kube.create(SECRETS, secret, ns)
    created: dict[str, Any] = await kube.create(TRAININGTEMPLATES, TEMPLATE, ns)
    return created


class Operator:
    """`python -m lbtrain operator` for one namespace; `profile` runs it under cProfile;
    `source` runs the operator of another checkout (its `lbtrain`, `operator` and `webhook`
    folders first on the path), so two versions are measured by one script, side by side."""

    def __init__(
        self,
        kubeconfig: Path,
        ns: str,
        fake: FakeLabelbox,
        log: Path,
        profile: Path | None = None,
        source: Path | None = None,
    ) -> None:
        self.source = source
        prefix = ["-m", "cProfile", "-o", str(profile)] if profile else []
        self.args = [
            sys.executable,
            *prefix,
            "-m",
            "lbtrain",
            "operator",
            f"--kubeconfig={kubeconfig}",
            f"--namespace={ns}",
            f"--labelbox-endpoint={fake.endpoint}",
            f"--labelbox-rest-endpoint={fake.rest_endpoint}",
            "--metrics-port=0",
            "--liveness-port=0",
        ]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        env = {**os.environ, "LABELBOX_API_KEY": API_KEY, "NO_PROXY": "127.0.0.1,localhost"}
        if self.source is not None:
            paths = [self.source, self.source / "operator", self.source / "webhook"]
            env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.source or REPO,  # `-m` puts the working folder first on the path
            )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
