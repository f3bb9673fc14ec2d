"""The ``bounding_box`` model type: object detection with Labelbox bounding boxes.

A Faster R-CNN R50-FPN v2 (production, COCO weights) or a small FCOS learns the boxes
(:mod:`lbtrain_trainer.tasks.detection`). Boxes are clipped to their image when prepared (one
smaller than a pixel is dropped and counted). A row whose label holds objects but no box (only
polygons, say) is dropped and counted, not trained as an empty image: that would teach the
model that the polygon's object is background. Evaluation computes mAP over every detection, as
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
from lbtrain_trainer.rows import BOX_KEY, ExportRow, object_kind

if TYPE_CHECKING:
    from lbtrain_trainer.tasks.base import Task, TaskContext

# Why a row labelled with objects but no box is dropped rather than trained as background.
NO_BOX_REASON = "labelled with other shapes only, no bounding box"
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
    annotation_kinds = (BOX_KEY,)

    def ground_truth(
        self,
        *,
        row: ExportRow,
        base: Example,
        feature: str,
        media_file: Path,
        hp: Hyperparameters,
    ) -> Truth:
        if not row.boxes and row.objects:  # not an empty image: its objects are other shapes
            kinds = sorted({object_kind(raw) for raw in row.objects})
            return Truth(None, f"{NO_BOX_REASON} ({', '.join(kinds)})")
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
        image, draw = synthetic.canvas(rng, image_size)
        objects: list[dict[str, Any]] = []
        half = image_size // 2
        slots = rng.sample([(0, 0), (half, 0), (0, half), (half, half)], rng.randint(1, 2))
        for x0, y0 in slots:
            shape = rng.choice(("circle", "square"))
            side = rng.randint(half * 5 // 8, half - 2)
            left, top = x0 + rng.randint(0, half - side), y0 + rng.randint(0, half - side)
            synthetic.draw_shape(
                draw,
                shape,
                (left, top, left + side - 1, top + side - 1),
                synthetic.jitter(synthetic.SHAPE_COLOURS[shape], rng),
            )
            bbox = {
                "top": float(top),
                "left": float(left),
                "height": float(side),
                "width": float(side),
            }
            objects.append(
                synthetic.annotation_object(shape, {"bounding_box": bbox}, "ImageBoundingBox")
            )
        return synthetic.image_label(
            image, {"objects": objects, "classifications": [], "relationships": []}, image_size
        )


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
