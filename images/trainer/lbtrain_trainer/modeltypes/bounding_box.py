"""The ``bounding_box`` model type: object detection with Labelbox bounding boxes.

A Faster R-CNN R50-FPN v2 (production, COCO weights) or a small FCOS learns the boxes
(:mod:`lbtrain_trainer.tasks.detection`). Boxes are clipped to their image when prepared (one
smaller than a pixel is dropped and counted). Evaluation computes mAP over every detection, as
mAP is defined, and uploads the boxes scoring at least ``score_threshold``; the headline is
mAP@0.5. :func:`detection_evaluation` is public so that a plugin that learns other shapes as
boxes (``examples/plugin-polygon``) scores them the same way.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbtrain_trainer import detection_metrics, hyperparams, predictions, synthetic
from lbtrain_trainer.ground_truth import box_truth
from lbtrain_trainer.hyperparams import Hyperparameters
from lbtrain_trainer.manifest import Example, PreparedDataset
from lbtrain_trainer.models.pretrained import DETECTOR_FILE
from lbtrain_trainer.modeltypes.base import Evaluation, ModelType, Pair, SyntheticLabel, Truth
from lbtrain_trainer.outputs import RowOutput
from lbtrain_trainer.rows import ExportRow

if TYPE_CHECKING:
    from lbtrain_trainer.tasks.base import Task, TaskContext

# (model run id, classes, example, output, score threshold) -> the row's NDJSON rows
RowWriter = Callable[[str, Sequence[str], Example, RowOutput, float], list[dict[str, Any]]]


class BoundingBox(ModelType):
    """Objects in an image, as boxes (Faster R-CNN R50-FPN v2; mAP@0.5)."""

    name = "bounding_box"
    media = "image"
    headline_metric = "map50"
    production_defaults = hyperparams.DETECTION_PRODUCTION_DEFAULTS
    pretrained = (DETECTOR_FILE,)
    synthetic_classes = ("circle", "square")

    def ground_truth(
        self,
        *,
        row: ExportRow,
        base: Example,
        feature: str,
        media_file: Path,
        hp: Hyperparameters,
    ) -> Truth:
        example, dropped = box_truth(row, base, hp)
        return Truth(example, dropped_annotations=dropped)

    def task(self, ctx: TaskContext) -> Task:
        from lbtrain_trainer.tasks.detection import DetectionTask

        return DetectionTask(ctx)

    def evaluate(
        self,
        *,
        dataset: PreparedDataset,
        hp: Hyperparameters,
        model_run_id: str,
        pairs: Sequence[Pair],
        tune_pairs: Sequence[Pair],
    ) -> Evaluation:
        return detection_evaluation(
            dataset=dataset,
            hp=hp,
            model_run_id=model_run_id,
            pairs=pairs,
            row_writer=predictions.detection_rows,
        )

    def synthetic_label(self, *, rng: random.Random, image_size: int) -> SyntheticLabel:
        return synthetic.image_label(*synthetic.boxes_image(rng, image_size), image_size)


def detection_evaluation(
    *,
    dataset: PreparedDataset,
    hp: Hyperparameters,
    model_run_id: str,
    pairs: Sequence[Pair],
    row_writer: RowWriter,
) -> Evaluation:
    """mAP@0.5 (headline), mAP@0.5:0.95 and per-class AP over every detection; the Labelbox
    rows of each pair from ``row_writer`` (which keeps the boxes above ``score_threshold``)."""
    classes = dataset.classes
    rows: list[dict[str, Any]] = []
    for example, output in pairs:
        rows += row_writer(model_run_id, classes, example, output, hp.score_threshold)
    result = detection_metrics.evaluate(
        [[(b.name, (b.left, b.top, b.width, b.height)) for b in e.boxes] for e, _ in pairs],
        [
            [(b.name, (b.left, b.top, b.width, b.height), b.score) for b in o.boxes]
            for _, o in pairs
        ],
        classes,
    )
    return Evaluation("map50", result["map50"], result, rows)
