"""From model outputs to decisions, run-level metrics and the rows uploaded to Labelbox.

The train stage predicts the evaluation split (and, for a type that tunes thresholds, the tune
split); this module pairs each output with its ground truth and hands the pairs to the model
type (:meth:`lbtrain_trainer.modeltypes.base.ModelType.evaluate`), which decides, scores and
writes the Labelbox rows. Which metric heads a run, and how, is the type's: accuracy for
single-label classification, macro-F1 for multi-label classification and NER, mAP@0.5 for
detection (see each type's module).
"""

from __future__ import annotations

from collections.abc import Sequence

from lbtrain_trainer.hyperparams import Hyperparameters
from lbtrain_trainer.manifest import Example, PreparedDataset
from lbtrain_trainer.modeltypes import registry
from lbtrain_trainer.modeltypes.base import Evaluation, Pair
from lbtrain_trainer.outputs import RowOutput

__all__ = ["Evaluation", "evaluate", "pair_by_id"]


def pair_by_id(examples: Sequence[Example], outputs: Sequence[RowOutput]) -> list[Pair]:
    """Each example with the output for its data row, in the examples' order (rows without an
    output are left out)."""
    found = {o.data_row_id: o for o in outputs}
    return [(e, found[e.data_row_id]) for e in examples if e.data_row_id in found]


def evaluate(
    dataset: PreparedDataset,
    hp: Hyperparameters,
    model_run_id: str,
    eval_examples: Sequence[Example],
    eval_outputs: Sequence[RowOutput],
    tune_examples: Sequence[Example] = (),
    tune_outputs: Sequence[RowOutput] = (),
) -> Evaluation:
    return registry.get(dataset.model_type).evaluate(
        dataset=dataset,
        hp=hp,
        model_run_id=model_run_id,
        pairs=pair_by_id(eval_examples, eval_outputs),
        tune_pairs=pair_by_id(tune_examples, tune_outputs),
    )
