"""Fixtures for the trainer tests: synthetic model runs seeded into the fake Labelbox.

Torch runs single-threaded here: the test machine has two cores shared with other builds,
and an oversubscribed thread pool makes tiny models tens of times slower.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lbtrain import contract
from lbtrain.devtools.fake_labelbox import FakeLabelbox
from lbtrain_trainer import cli, synthetic

SMALL = {"model_size": "small", "cpu_threads": 1, "num_workers": 0}
API_KEY = "trainer-test-key"


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
        ]

    def main(self, stage: str, **overrides: Any) -> int:
        return cli.main(self.argv(stage, **overrides))

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
