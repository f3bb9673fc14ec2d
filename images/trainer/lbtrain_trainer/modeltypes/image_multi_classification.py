"""The ``image_multi_classification`` model type: the checked answers of a checklist per image.

One sigmoid per class with binary cross-entropy; per-class thresholds are tuned on the tune
split; scored by macro-F1. The synthetic data are coloured squares, the question is which
colours appear.
"""

from __future__ import annotations

import random

from lbtrain_trainer import synthetic
from lbtrain_trainer.modeltypes._classification import ImageClassification
from lbtrain_trainer.modeltypes.base import SyntheticLabel


class ImageMultiClassification(ImageClassification):
    """An image's checked answers of a checklist (ConvNeXt-T; macro-F1, tuned thresholds)."""

    name = "image_multi_classification"
    answer_kind = "checklist"
    multi = True
    tunes_thresholds = True
    headline_metric = "macro_f1"
    synthetic_feature = "colours"
    synthetic_classes = tuple(sorted(synthetic.COLOURS))

    def synthetic_label(self, *, rng: random.Random, image_size: int) -> SyntheticLabel:
        image, draw = synthetic.canvas(rng, image_size)
        present = [c for c in synthetic.COLOURS if rng.random() < 0.5] or [
            rng.choice(list(synthetic.COLOURS))
        ]
        cell = image_size // 2
        cells = rng.sample([(0, 0), (cell, 0), (0, cell), (cell, cell)], len(present))
        for colour, (x, y) in zip(present, cells, strict=True):
            pad = rng.randint(2, cell // 4)
            draw.rectangle(
                (x + pad, y + pad, x + cell - pad, y + cell - pad),
                fill=synthetic.jitter(synthetic.COLOURS[colour], rng),
            )
        cls = {
            "name": "colours",
            "value": "colours",
            "feature_id": "f-colours",
            "feature_schema_id": "s-colours",
            "checklist_answers": [{"name": c, "value": c, "classifications": []} for c in present],
        }
        return synthetic.image_label(
            image, {"objects": [], "classifications": [cls], "relationships": []}, image_size
        )
