"""The ``image_single_classification`` model type: one radio answer per image.

A ConvNeXt-T (production, ImageNet weights) or a small CNN learns the answer; softmax and
cross-entropy over the classes; scored by accuracy. The synthetic data are coloured shapes, the
question is which shape.
"""

from __future__ import annotations

import random

from lbtrain_trainer import synthetic
from lbtrain_trainer.modeltypes._classification import ImageClassification
from lbtrain_trainer.modeltypes.base import SyntheticLabel


class ImageSingleClassification(ImageClassification):
    """An image's one answer to a radio question (ConvNeXt-T; accuracy)."""

    name = "image_single_classification"
    answer_kind = "radio"
    multi = False
    tunes_thresholds = False
    headline_metric = "accuracy"
    synthetic_feature = "shape"
    synthetic_classes = tuple(sorted(synthetic.SHAPES))

    def synthetic_label(self, *, rng: random.Random, image_size: int) -> SyntheticLabel:
        image, draw = synthetic.canvas(rng, image_size)
        shape = rng.choice(synthetic.SHAPES)
        side = rng.randint(image_size // 3, image_size // 2)
        left, top = rng.randint(0, image_size - side), rng.randint(0, image_size - side)
        synthetic.draw_shape(
            draw,
            shape,
            (left, top, left + side, top + side),
            synthetic.jitter(synthetic.SHAPE_COLOURS[shape], rng),
        )
        cls = {
            "name": "shape",
            "value": "shape",
            "feature_id": "f-shape",
            "feature_schema_id": "s-shape",
            "radio_answer": {"name": shape, "value": shape, "classifications": []},
        }
        return synthetic.image_label(
            image, {"objects": [], "classifications": [cls], "relationships": []}, image_size
        )
