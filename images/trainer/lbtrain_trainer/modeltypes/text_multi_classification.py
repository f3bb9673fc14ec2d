"""The ``text_multi_classification`` model type: the checked answers of a checklist per text.

One sigmoid per class over a BERT encoder; per-class thresholds tuned on the tune split; scored
by macro-F1. The synthetic data join sentences of one or two topics.
"""

from __future__ import annotations

import random

from lbtrain_trainer import synthetic
from lbtrain_trainer.modeltypes._classification import TextClassification
from lbtrain_trainer.modeltypes.base import SyntheticLabel


class TextMultiClassification(TextClassification):
    """A text's checked answers of a checklist (BERT; macro-F1, tuned thresholds)."""

    name = "text_multi_classification"
    answer_kind = "checklist"
    multi = True
    tunes_thresholds = True
    headline_metric = "macro_f1"
    synthetic_feature = "topics"
    synthetic_classes = tuple(sorted(synthetic.TOPICS))

    def synthetic_label(self, *, rng: random.Random, image_size: int) -> SyntheticLabel:
        topics = rng.sample(list(synthetic.TOPICS), rng.choice((1, 1, 2)))
        text = " and ".join(rng.choice(synthetic.TOPICS[t]) for t in topics) + "."
        cls = {
            "name": "topics",
            "value": "topics",
            "feature_id": "f-topics",
            "feature_schema_id": "s-topics",
            "checklist_answers": [{"name": t, "value": t, "classifications": []} for t in topics],
        }
        return synthetic.text_label(
            text, {"objects": [], "classifications": [cls], "relationships": []}
        )
