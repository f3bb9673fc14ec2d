"""What the four classification types share: reading answers, deciding, scoring, writing rows.

Single-label takes the most probable class and is scored by accuracy; multi-label selects every
class above its threshold, tuned per class on the tune split (validation when there is one), and
is scored by macro-F1. Image and text differ only in their media, network and defaults. Each of
the four types is its own module (``image_single_classification`` ...) that picks one of the
two media classes here and one label cardinality.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lbtrain_trainer import hyperparams, metrics, predictions
from lbtrain_trainer.errors import BadInputError
from lbtrain_trainer.ground_truth import answer_truth
from lbtrain_trainer.hyperparams import Hyperparameters
from lbtrain_trainer.manifest import Example, PreparedDataset
from lbtrain_trainer.models.pretrained import CONVNEXT_FILE, TEXT_DIR
from lbtrain_trainer.modeltypes.base import Evaluation, ModelType, Pair, Truth
from lbtrain_trainer.rows import ExportRow

if TYPE_CHECKING:
    from lbtrain_trainer.tasks.base import Task, TaskContext


class Classification(ModelType):
    """A classification question; subclasses set ``multi`` and the media."""

    multi: ClassVar[bool] = False

    def check_classes(self, *, classes: Sequence[str]) -> None:
        if not self.multi and len(classes) < 2:
            raise BadInputError(
                "single classification needs at least two classes; every row answers "
                f"{classes[0]!r}"
            )

    def ground_truth(
        self,
        *,
        row: ExportRow,
        base: Example,
        feature: str,
        media_file: Path,
        hp: Hyperparameters,
    ) -> Truth:
        assert self.answer_kind is not None
        example, reason = answer_truth(row, base, feature, self.answer_kind)
        return Truth(example, reason)

    def evaluate(
        self,
        *,
        dataset: PreparedDataset,
        hp: Hyperparameters,
        model_run_id: str,
        pairs: Sequence[Pair],
        tune_pairs: Sequence[Pair],
    ) -> Evaluation:
        if self.multi:
            return _multi_label(dataset, hp, model_run_id, pairs, tune_pairs)
        return _single_label(dataset, model_run_id, pairs)


class ImageClassification(Classification):
    media = "image"
    pretrained = (CONVNEXT_FILE,)

    def task(self, ctx: TaskContext) -> Task:
        from lbtrain_trainer.tasks.classification import ImageClassificationTask

        return ImageClassificationTask(ctx, multi=self.multi)


class TextClassification(Classification):
    media = "text"
    production_defaults = hyperparams.TEXT_PRODUCTION_DEFAULTS
    pretrained = (TEXT_DIR,)

    def task(self, ctx: TaskContext) -> Task:
        from lbtrain_trainer.tasks.classification import TextClassificationTask

        return TextClassificationTask(ctx, multi=self.multi)


def _single_label(dataset: PreparedDataset, model_run_id: str, pairs: Sequence[Pair]) -> Evaluation:
    classes = dataset.classes
    rows: list[dict[str, Any]] = []
    chosen = [classes[max(range(len(classes)), key=lambda k: o.scores[k])] for _, o in pairs]
    for (example, output), label in zip(pairs, chosen, strict=True):
        rows += predictions.classification_rows(
            model_run_id, dataset.feature_name, classes, example, output, [label], multi=False
        )
    index = {c: i for i, c in enumerate(classes)}
    result = metrics.single_label(
        [index[e.labels[0]] for e, _ in pairs], [index[c] for c in chosen], classes
    )
    return Evaluation("accuracy", result["accuracy"], result, rows)


def _multi_label(
    dataset: PreparedDataset,
    hp: Hyperparameters,
    model_run_id: str,
    pairs: Sequence[Pair],
    tune: Sequence[Pair],
) -> Evaluation:
    classes = dataset.classes
    rows: list[dict[str, Any]] = []
    thresholds = metrics.tune_thresholds(
        [o.scores for _, o in tune],
        [set(e.labels) for e, _ in tune],
        classes,
        hp.multi_label_threshold,
    )
    selected = [
        [c for c, s, t in zip(classes, o.scores, thresholds, strict=True) if s >= t]
        for _, o in pairs
    ]
    for (example, output), chosen_labels in zip(pairs, selected, strict=True):
        rows += predictions.classification_rows(
            model_run_id,
            dataset.feature_name,
            classes,
            example,
            output,
            chosen_labels,
            multi=True,
        )
    result = metrics.multi_label(
        [set(e.labels) for e, _ in pairs], [set(s) for s in selected], classes
    )
    by_class = dict(zip(classes, thresholds, strict=True))
    result["thresholds"] = by_class
    return Evaluation("macro_f1", result["macro_f1"], result, rows, by_class)
