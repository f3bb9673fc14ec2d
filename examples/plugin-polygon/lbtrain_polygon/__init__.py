"""The ``polygon`` model type: Labelbox polygon annotations, learned by a detector.

A worked example of a model type that lives outside lbtrain (issue 27). None of lbtrain's six
types reads polygons (``ImagePolygon`` objects in an export: ``"polygon": [{"x": .., "y": ..},
...]``), and the export parser leaves them in ``ExportRow.objects`` untouched. This type reads
them, learns each polygon's enclosing box with lbtrain's detection task (the same networks,
weights and defaults as ``bounding_box``), scores by mAP@0.5 over those boxes, and uploads each
detection as a four-corner polygon, the shape its labellers drew in.

It only implements :class:`lbtrain_trainer.modeltypes.base.ModelType`: the stages, ranks,
checkpoints and uploads are the trainer's. It is registered by its distribution's entry point
(``pyproject.toml``), not by any list in lbtrain.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbtrain_trainer import hyperparams, predictions, synthetic
from lbtrain_trainer.errors import BadInputError
from lbtrain_trainer.ground_truth import box_truth
from lbtrain_trainer.hyperparams import Hyperparameters
from lbtrain_trainer.manifest import Example, PreparedDataset
from lbtrain_trainer.models.pretrained import DETECTOR_FILE
from lbtrain_trainer.modeltypes.base import Evaluation, ModelType, Pair, SyntheticLabel, Truth
from lbtrain_trainer.modeltypes.bounding_box import detection_evaluation
from lbtrain_trainer.outputs import RowOutput
from lbtrain_trainer.rows import Box, ExportRow

if TYPE_CHECKING:
    from lbtrain_trainer.tasks.base import Task, TaskContext

__all__ = ["Polygon", "enclosing_box", "polygon_rows"]

# The synthetic shapes: (name, colour).
SHAPES = {"diamond": (230, 200, 40), "triangle": (50, 80, 230)}


def enclosing_box(name: str, points: object) -> Box:
    """The smallest box around a Labelbox polygon (a list of ``{"x", "y"}`` points, at least
    three); ValueError if it is not one."""
    if not isinstance(points, list) or len(points) < 3:
        raise ValueError("a polygon needs a list of at least three points")
    xs, ys = [], []
    for point in points:
        if not isinstance(point, Mapping):
            raise ValueError(f"polygon point {point!r} is not an object")
        xs.append(float(point["x"]))
        ys.append(float(point["y"]))
    return Box(name, min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))


def polygon_rows(
    model_run_id: str,
    classes: Sequence[str],
    example: Example,
    output: RowOutput,
    score_threshold: float,
) -> list[dict[str, Any]]:
    """lbtrain's detection rows (box predictions and metrics) with each box written as the
    polygon of its four corners, clockwise from the top left."""
    rows = predictions.detection_rows(model_run_id, classes, example, output, score_threshold)
    written = []
    for row in rows:
        box = row.get("bbox")
        if isinstance(box, Mapping):
            left, top = box["left"], box["top"]
            right, bottom = left + box["width"], top + box["height"]
            corners = ((left, top), (right, top), (right, bottom), (left, bottom))
            row = {k: v for k, v in row.items() if k != "bbox"}
            row["polygon"] = [{"x": round(x, 2), "y": round(y, 2)} for x, y in corners]
        written.append(row)
    return written


class Polygon(ModelType):
    """Polygons in an image, learned as their enclosing boxes (Faster R-CNN; mAP@0.5)."""

    name = "polygon"
    media = "image"
    headline_metric = "map50"
    production_defaults = hyperparams.DETECTION_PRODUCTION_DEFAULTS
    pretrained = (DETECTOR_FILE,)
    synthetic_classes = tuple(sorted(SHAPES))

    def ground_truth(
        self,
        *,
        row: ExportRow,
        base: Example,
        feature: str,
        media_file: Path,
        hp: Hyperparameters,
    ) -> Truth:
        boxes = []
        for raw in row.objects:
            if "polygon" not in raw:
                continue
            name = str(raw.get("name") or raw.get("value") or "")
            try:
                boxes.append(enclosing_box(name, raw["polygon"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise BadInputError(
                    f"malformed polygon {name!r}: {exc}", [row.data_row_id]
                ) from exc
        example, dropped = box_truth(replace(row, boxes=tuple(boxes)), base, hp)
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
            row_writer=polygon_rows,
        )

    def synthetic_label(self, *, rng: random.Random, image_size: int) -> SyntheticLabel:
        """One or two diamonds and triangles, one per quarter of the image."""
        image, draw = synthetic.canvas(rng, image_size)
        objects = []
        half = image_size // 2
        slots = rng.sample([(0, 0), (half, 0), (0, half), (half, half)], rng.randint(1, 2))
        for x0, y0 in slots:
            shape = rng.choice(sorted(SHAPES))
            side = rng.randint(half * 5 // 8, half - 2)
            left, top = x0 + rng.randint(0, half - side), y0 + rng.randint(0, half - side)
            right, bottom, middle_x = left + side - 1, top + side - 1, left + (side - 1) / 2
            if shape == "diamond":
                middle_y = top + (side - 1) / 2
                corners = [(middle_x, top), (right, middle_y), (middle_x, bottom), (left, middle_y)]
            else:
                corners = [(middle_x, top), (right, bottom), (left, bottom)]
            draw.polygon(corners, fill=synthetic.jitter(SHAPES[shape], rng))
            points = [{"x": float(x), "y": float(y)} for x, y in corners]
            objects.append(synthetic.annotation_object(shape, {"polygon": points}, "ImagePolygon"))
        annotations = {"objects": objects, "classifications": [], "relationships": []}
        return synthetic.image_label(image, annotations, image_size)
