"""Validation during training (lbtrain_trainer.validation): the headline metric on the
validation split after the epochs ``validate_every_epochs`` names and after the last, in the
loss history and in rank 0's live progress, without changing what the model learns."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from lbtrain import contract
from lbtrain_trainer import hyperparams, train
from lbtrain_trainer.artifacts import Destination
from lbtrain_trainer.checkpoint import Checkpointer, State, fingerprint
from lbtrain_trainer.errors import BadInputError
from lbtrain_trainer.live_progress import LiveProgress
from lbtrain_trainer.manifest import PreparedDataset
from lbtrain_trainer.runtime import prepare_model, seed_everything, setup, teardown
from lbtrain_trainer.splits import Split
from lbtrain_trainer.tasks import make_task
from lbtrain_trainer.tasks.base import TaskContext
from lbtrain_trainer.validation import Validated, epoch_validator, is_due
from lbtrain_trainer.workspace import Workspace

pytestmark = pytest.mark.trainer


@pytest.mark.parametrize(
    ("every", "epochs", "due"),
    [
        (1, 4, [1, 2, 3, 4]),
        (2, 5, [2, 4, 5]),  # and after the last epoch, whatever the period
        (3, 3, [3]),
        (10, 4, [4]),
        (0, 4, []),  # off: only the final evaluation
    ],
)
def test_validation_runs_every_n_epochs_and_after_the_last(
    every: int, epochs: int, due: list[int]
) -> None:
    assert [e for e in range(1, epochs + 1) if is_due(e, epochs, every)] == due


def test_a_resumed_run_reports_the_last_validation_its_history_holds() -> None:
    history: list[dict[str, Any]] = [
        {"epoch": 1, "loss": 0.9, "validation_metric": "accuracy", "validation_value": 0.5},
        {"epoch": 2, "loss": 0.7, "validation_metric": "accuracy", "validation_value": 0.75},
        {"epoch": 3, "loss": 0.6},  # not due that epoch
    ]
    assert Validated.from_history(history) == Validated("accuracy", 0.75)
    assert Validated.from_history([{"epoch": 1, "loss": 0.9}]) is None


def test_a_negative_period_is_bad_input_that_names_the_hyperparameter() -> None:
    with pytest.raises(BadInputError, match="validate_every_epochs must be >= 0"):
        hyperparams.resolve_hyperparameters(
            "text_single_classification", {"model_size": "small", "validate_every_epochs": -1}
        )


class Reports:
    """A LiveProgress sender that keeps every report it is handed."""

    def __init__(self) -> None:
        self.received: list[Mapping[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, report: Mapping[str, Any]) -> None:
        with self.lock:
            self.received.append(report)


def _train(ws: Path, target: Path, validating: bool, live: LiveProgress | None) -> State:
    """The train stage's loop on the prepared workspace, from a freshly seeded model."""
    workspace = Workspace(ws)
    hp = hyperparams.load(workspace.hyperparameters_file)
    dataset = PreparedDataset.load(workspace.dataset_file)
    runtime = setup(hp)
    try:
        seed_everything(hp.seed)
        task = make_task(TaskContext(dataset, hp, ws, None, False))
        model = prepare_model(task.build_model(), runtime, task.channels_last, hp.compile)
        checkpointer = Checkpointer(Destination(str(target)), fingerprint(task.describe(), hp))
        validate = epoch_validator(task, dataset, hp, runtime, "mr") if validating else None
        state, _, _ = train.train_epochs(
            task, model, dataset.split(Split.TRAIN), hp, runtime, checkpointer, live, validate
        )
        return state
    finally:
        teardown(runtime)


def test_validation_is_reported_and_recorded_and_leaves_training_unchanged(
    seed: Any, tmp_path: Path
) -> None:
    run = seed("text_single_classification", 40, epochs=3, validate_every_epochs=2)
    assert run.main("export") == contract.EXIT_OK
    assert run.main("prepare") == contract.EXIT_OK
    dataset = PreparedDataset.load(Workspace(run.workspace).dataset_file)
    assert dataset.split(Split.VALIDATION), "the synthetic run has validation rows"
    reports = Reports()
    live = LiveProgress("mr", reports, interval_s=0.0)
    validated = _train(run.workspace, tmp_path / "on", True, live)
    live.close()
    plain = _train(run.workspace, tmp_path / "off", False, None)

    # epochs 2 and 3 (the last) are validated, epoch 1 is not
    checked = [e for e in validated.history if "validation_value" in e]
    assert [e["epoch"] for e in checked] == [2, 3]
    assert {e["validation_metric"] for e in checked} == {"accuracy"}
    assert all(0.0 <= e["validation_value"] <= 1.0 for e in checked)
    # predicting in eval mode changes nothing the next epoch learns from
    assert [e["loss"] for e in validated.history] == [e["loss"] for e in plain.history]

    last = reports.received[-1]
    assert (last["epoch"], last["validationMetric"]) == (3, "accuracy")
    assert last["validationValue"] == checked[-1]["validation_value"]
    first_epoch = [r for r in reports.received if r["epoch"] == 1]
    assert first_epoch and all(r["validationValue"] is None for r in first_epoch)


def test_nothing_is_validated_when_off_or_when_the_run_has_no_validation_rows(
    seed: Any,
) -> None:
    run = seed("text_single_classification", 40, epochs=1, validate_every_epochs=0)
    assert run.main("export") == contract.EXIT_OK
    assert run.main("prepare") == contract.EXIT_OK
    workspace = Workspace(run.workspace)
    hp = hyperparams.load(workspace.hyperparameters_file)
    dataset = PreparedDataset.load(workspace.dataset_file)
    runtime = setup(hp)
    try:
        task = make_task(TaskContext(dataset, hp, run.workspace, None, False))
        assert epoch_validator(task, dataset, hp, runtime, "mr") is None
        on = hyperparams.Hyperparameters(**{**hp.to_dict(), "validate_every_epochs": 1})
        assert epoch_validator(task, dataset, on, runtime, "mr") is not None
        no_validation_rows = dataclasses.replace(
            dataset, examples=[e for e in dataset.examples if e.split != Split.VALIDATION]
        )
        assert epoch_validator(task, no_validation_rows, on, runtime, "mr") is None
    finally:
        teardown(runtime)
