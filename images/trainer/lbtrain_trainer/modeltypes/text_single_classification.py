"""The ``text_single_classification`` model type: one radio answer per text.

A BERT encoder (production, the pretrained text-encoder) or a small one trained on the data's
WordPiece vocabulary classifies the text; scored by accuracy. The synthetic data are templated
sentences about three topics.
"""

from __future__ import annotations

import random

from lbtrain_trainer import synthetic
from lbtrain_trainer.modeltypes._classification import TextClassification
from lbtrain_trainer.modeltypes.base import SyntheticLabel


class TextSingleClassification(TextClassification):
    """A text's one answer to a radio question (BERT; accuracy)."""

    name = "text_single_classification"
    answer_kind = "radio"
    multi = False
    tunes_thresholds = False
    headline_metric = "accuracy"
    synthetic_feature = "topic"
    synthetic_classes = tuple(sorted(synthetic.TOPICS))

    def synthetic_label(self, *, rng: random.Random, image_size: int) -> SyntheticLabel:
        topic = rng.choice(list(synthetic.TOPICS))
        sentence = rng.choice(synthetic.TOPICS[topic])
        text = f"{sentence} {rng.choice(['today', 'again', 'this week', ''])}".strip()
        cls = {
            "name": "topic",
            "value": "topic",
            "feature_id": "f-topic",
            "feature_schema_id": "s-topic",
            "radio_answer": {"name": topic, "value": topic, "classifications": []},
        }
        return synthetic.text_label(
            text + ".", {"objects": [], "classifications": [cls], "relationships": []}
        )
