"""The ``ner`` model type: named entities in a text, as BIO token classification.

A BERT encoder (production, the pretrained text-encoder) or a small one tags each token; tags
become spans again through the tokenizer's offsets (:mod:`lbtrain_trainer.tasks.ner`). Ground
truth spans are checked against the text (offsets counted in UTF-16 are fixed, a span that does
not match its token is bad input). The text is read byte-faithfully (``\r\n`` stays two
characters, as Labelbox counts offsets). Scored by entity-level exact-match macro-F1; each predicted
entity is uploaded with an inclusive ``end``, as Labelbox counts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbtrain_trainer import hyperparams, metrics, predictions, synthetic
from lbtrain_trainer.ground_truth import entity_truth
from lbtrain_trainer.hyperparams import Hyperparameters
from lbtrain_trainer.manifest import Example, PreparedDataset
from lbtrain_trainer.media import read_media_text
from lbtrain_trainer.models.pretrained import TEXT_DIR
from lbtrain_trainer.modeltypes.base import Evaluation, ModelType, Pair, SyntheticLabel, Truth
from lbtrain_trainer.rows import ENTITY_KEY, ExportRow

if TYPE_CHECKING:
    from lbtrain_trainer.tasks.base import Task, TaskContext


class Ner(ModelType):
    """Named entities in a text (BERT token classification; entity macro-F1)."""

    name = "ner"
    media = "text"
    headline_metric = "macro_f1"
    production_defaults = hyperparams.TEXT_PRODUCTION_DEFAULTS
    pretrained = (TEXT_DIR,)
    synthetic_classes = ("city", "person")
    annotation_kinds = (ENTITY_KEY,)

    def ground_truth(
        self,
        *,
        row: ExportRow,
        base: Example,
        feature: str,
        media_file: Path,
        hp: Hyperparameters,
    ) -> Truth:
        return Truth(entity_truth(row, base, read_media_text(media_file), hp))

    def task(self, ctx: TaskContext) -> Task:
        from lbtrain_trainer.tasks.ner import NerTask

        return NerTask(ctx)

    def evaluate(
        self,
        *,
        dataset: PreparedDataset,
        hp: Hyperparameters,
        model_run_id: str,
        pairs: Sequence[Pair],
        tune_pairs: Sequence[Pair],
    ) -> Evaluation:
        classes = dataset.classes
        rows: list[dict[str, Any]] = []
        for example, output in pairs:
            rows += predictions.ner_rows(model_run_id, classes, example, output)
        result = metrics.spans(
            [{(e.name, e.start, e.end) for e in ex.entities} for ex, _ in pairs],
            [{(s.name, s.start, s.end) for s in o.spans} for _, o in pairs],
            classes,
        )
        return Evaluation("macro_f1", result["macro_f1"], result, rows)

    def synthetic_label(self, *, rng: random.Random, image_size: int) -> SyntheticLabel:
        template = rng.choice(synthetic.NER_TEMPLATES)
        person, city = rng.choice(synthetic.PEOPLE), rng.choice(synthetic.CITIES)
        text = template.format(person=person, city=city)
        objects = []
        for name, token in (("person", person), ("city", city)):
            start = text.index(token)
            loc = {"start": start, "end": start + len(token) - 1, "token": token}  # inclusive end
            objects.append(synthetic.annotation_object(name, {"location": loc}, "TextEntity"))
        return synthetic.text_label(
            text, {"objects": objects, "classifications": [], "relationships": []}
        )
