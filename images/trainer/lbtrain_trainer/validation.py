"""Validation during training: the headline metric on the validation split after an epoch.

A run that trains for hours used to say nothing about how good the model was getting until it
had finished; the live progress report (:mod:`lbtrain_trainer.live_progress`) and the loss
history in the results now carry the last validation value of the model type's headline metric
(accuracy, macro-F1, mAP...), measured after every ``validate_every_epochs`` epochs (and after
the last one) — the curve a Labelbox user reads to tell a model that learns from one that does
not.

Only rank 0 validates, on the whole validation split, while the other ranks wait at the epoch's
barrier as they already do for its checkpoint: the split is a tenth of the data and predicting
costs about a third of a training step per row, so sharding it would save little and need a
gather. Training is not changed by it: prediction runs in eval mode (no dropout, BatchNorm's
running statistics untouched) under ``torch.inference_mode``, and each epoch reseeds torch's
random generator before drawing its batches. Only rows in the ``validation`` split are used:
when a run has none, nothing is validated (the final evaluation, on the test split, is not
affected either way).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from lbtrain_trainer.evaluation import evaluate
from lbtrain_trainer.hyperparams import Hyperparameters
from lbtrain_trainer.loaders import predict_all
from lbtrain_trainer.manifest import PreparedDataset
from lbtrain_trainer.runtime import Runtime
from lbtrain_trainer.splits import Split
from lbtrain_trainer.tasks.base import Task

log = logging.getLogger(__name__)
# The keys of a loss-history entry (checkpointed) that hold the epoch's validation.
HISTORY_METRIC, HISTORY_VALUE = "validation_metric", "validation_value"


@dataclass(frozen=True)
class Validated:
    """The headline metric's name and its value on the validation split."""

    metric: str
    value: float

    def history(self) -> dict[str, Any]:
        return {HISTORY_METRIC: self.metric, HISTORY_VALUE: round(self.value, 5)}

    @classmethod
    def from_history(cls, entries: Sequence[Mapping[str, Any]]) -> Validated | None:
        """The last validation a (resumed) run's history holds, if any."""
        for entry in reversed(entries):
            if isinstance(entry.get(HISTORY_METRIC), str) and entry.get(HISTORY_VALUE) is not None:
                return cls(str(entry[HISTORY_METRIC]), float(entry[HISTORY_VALUE]))
        return None


Validator = Callable[[nn.Module], Validated]


def is_due(epochs_done: int, epochs: int, every: int) -> bool:
    """Whether to validate once ``epochs_done`` epochs (1-based) have ended: every ``every``
    epochs and after the last one; never when ``every`` is 0."""
    if every <= 0:
        return False
    return epochs_done % every == 0 or epochs_done == epochs


def epoch_validator(
    task: Task, dataset: PreparedDataset, hp: Hyperparameters, runtime: Runtime, model_run_id: str
) -> Validator | None:
    """Rank 0's validator, or None where nothing is to be validated (another rank, the
    hyperparameter at 0, no validation rows)."""
    if not runtime.is_main or hp.validate_every_epochs == 0:
        return None
    examples = dataset.split(Split.VALIDATION)
    if not examples:
        log.info("no validation rows: training reports no validation metric")
        return None

    def validate(model: nn.Module) -> Validated:
        outputs = predict_all(task, model, examples, hp, runtime)
        result = evaluate(dataset, hp, model_run_id, examples, outputs)
        return Validated(result.headline_name, float(result.headline))

    return validate
