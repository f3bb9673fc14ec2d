"""Fixtures for the trainer tests: synthetic model runs seeded into the fake Labelbox.

Torch runs single-threaded here: the test machine has two cores shared with other builds,
and an oversubscribed thread pool makes tiny models tens of times slower.

Every trainer test runs offline (:func:`offline`): ``HF_HUB_OFFLINE=1``, HTTP(S) proxies on a
closed local port with ``NO_PROXY`` for loopback, and a socket guard that lets only loopback
connections through, in the pytest process and in every Python subprocess a test starts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lbtrain import contract
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_trainer import cli, synthetic
from tests.trainer.offline import sitecustomize as network_guard

SMALL = {"model_size": "small", "cpu_threads": 1, "num_workers": 0}
API_KEY = "trainer-test-key"
GUARD_SITE = Path(network_guard.__file__).parent  # holds sitecustomize.py
LOOPBACK = "127.0.0.1,localhost"


def _closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """No network but loopback, for this process and the Python processes it starts.

    Yields the dead proxy's URL. Function-scoped (through ``monkeypatch``) so that the guard
    never leaks into other test directories of the same pytest session.
    """
    proxy = f"http://127.0.0.1:{_closed_port()}"
    for scheme in ("http", "https", "all"):
        monkeypatch.setenv(f"{scheme}_proxy", proxy)
        monkeypatch.setenv(f"{scheme.upper()}_PROXY", proxy)
    monkeypatch.setenv("no_proxy", LOOPBACK)
    monkeypatch.setenv("NO_PROXY", LOOPBACK)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv(network_guard.ENV_FLAG, "1")
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(GUARD_SITE), *([path] if path else [])]))
    was_installed = network_guard.installed()
    network_guard.install()
    try:
        yield proxy
    finally:
        if not was_installed:
            network_guard.uninstall()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLabelbox]:
    with FakeLabelbox.in_thread(api_key=API_KEY) as server:
        yield server


@dataclass
class TrainerRun:
    """One model run seeded into the fake, and the CLI pointed at it."""

    fake: FakeLabelbox
    run_id: str
    model_type: str
    tmp: Path
    dataset: synthetic.SyntheticDataset
    hyperparameters: dict[str, Any]
    pretrained: Path | None = None
    last_stderr: str = ""

    @property
    def workspace(self) -> Path:
        return self.tmp / "workspace"

    @property
    def artifacts(self) -> Path:
        return self.tmp / "artifacts"

    @property
    def termination(self) -> Path:
        return self.tmp / "termination-log"

    def argv(self, stage: str, **overrides: Any) -> list[str]:
        hp = {**self.hyperparameters, **overrides}
        extra = ["--pretrained", str(self.pretrained)] if self.pretrained else []
        return [
            stage,
            *extra,
            "--model-run-id",
            self.run_id,
            "--model-type",
            self.model_type,
            "--model-id",
            "model-1",
            "--api-key",
            API_KEY,
            "--endpoint",
            self.fake.endpoint,
            "--rest-endpoint",
            self.fake.rest_endpoint,
            "--workspace",
            str(self.workspace),
            "--artifacts",
            str(self.artifacts),
            "--hyperparameters",
            json.dumps(hp),
            "--termination-message-path",
            str(self.termination),
            "--log-level",
            "WARNING",
            "--allow-loopback-media",  # the fake Labelbox serves the media on 127.0.0.1
        ]

    def main(self, stage: str, **overrides: Any) -> int:
        return cli.main(self.argv(stage, **overrides))

    def env(self, **overrides: Any) -> dict[str, str]:
        """The environment contract the operator sets on each stage container."""
        env = {
            **os.environ,
            contract.ENV_MODEL_RUN_ID: self.run_id,
            contract.ENV_MODEL_TYPE: self.model_type,
            contract.ENV_MODEL_ID: "model-1",
            contract.ENV_LABELBOX_API_KEY: API_KEY,
            contract.ENV_LABELBOX_ENDPOINT: self.fake.endpoint,
            contract.ENV_LABELBOX_REST_ENDPOINT: self.fake.rest_endpoint,
            contract.ENV_WORKSPACE: str(self.workspace),
            contract.ENV_ARTIFACTS: str(self.artifacts),
            contract.ENV_HYPERPARAMETERS: json.dumps({**self.hyperparameters, **overrides}),
            contract.ENV_TERMINATION_MESSAGE_PATH: str(self.termination),
            contract.ENV_ALLOW_LOOPBACK_MEDIA: "true",  # the fake serves the media on 127.0.0.1
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        if self.pretrained:
            env[contract.ENV_PRETRAINED] = str(self.pretrained)
        return env

    def process(self, stage: str, timeout: float = 240, **overrides: Any) -> int:
        """Run ``python -m lbtrain trainer <stage>`` as its own process, configured by the
        environment alone (as the operator runs a stage container); returns the exit code."""
        done = subprocess.run(
            [sys.executable, "-m", "lbtrain", "trainer", stage, "--log-level", "WARNING"],
            env=self.env(**overrides),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.last_stderr = done.stderr
        return done.returncode

    def summary(self) -> dict[str, Any]:
        data = self.termination.read_bytes()
        assert len(data) <= contract.TERMINATION_MESSAGE_MAX_BYTES
        result: dict[str, Any] = json.loads(data)
        return result

    def predictions(self) -> list[dict[str, Any]]:
        return self.fake.predictions(self.run_id)


@pytest.fixture
def seed(fake: FakeLabelbox, tmp_path: Path, request: pytest.FixtureRequest):
    """``seed(model_type, n_rows=40, rows=None, config=None, **hp) -> TrainerRun``."""

    def make(
        model_type: str,
        n_rows: int = 40,
        *,
        rows: list[dict[str, Any]] | None = None,
        config: dict[str, Any] | None = None,
        assign_splits: bool = True,
        **hp: Any,
    ) -> TrainerRun:
        run_id = f"mr-{request.node.name}-{model_type}"[:120]
        run_id = "".join(c if c.isalnum() or c in "-_" else "-" for c in run_id)
        dataset = synthetic.make_dataset(
            model_type,
            n_rows,
            media_url_for=fake.add_media,
            model_run_id=run_id,
            assign_splits=assign_splits,
        )
        fake.add_model_run(
            run_id,
            model_id="model-1",
            rows=rows if rows is not None else dataset.rows,
            config=config,
        )
        return TrainerRun(fake, run_id, model_type, tmp_path, dataset, {**SMALL, **hp})

    return make
