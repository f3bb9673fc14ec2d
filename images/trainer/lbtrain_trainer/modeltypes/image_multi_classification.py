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
        return synthetic.image_label(*synthetic.colours_image(rng, image_size), image_size)
