"""From model outputs to decisions, run-level metrics and the rows uploaded to Labelbox.

Single-label classification takes the most probable class; multi-label selects every class
above its threshold, tuned per class on the validation split; detection keeps boxes above
``score_threshold`` for upload but computes mAP over every detection (as mAP is defined).
The headline metric per model type is accuracy (single-label), macro-F1 (multi-label, NER) or
mAP@0.5 (detection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lbtrain_trainer import detection_metrics, metrics, predictions
from lbtrain_trainer.hyperparams import Hyperparameters
from lbtrain_trainer.manifest import Example, PreparedDataset
from lbtrain_trainer.outputs import RowOutput


@dataclass
class Evaluation:
    headline_name: str
    headline: float
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]  # prediction and metric rows for add_predictions
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def prediction_count(self) -> int:
        return sum(1 for r in self.rows if "uuid" in r)


def _by_id(
    examples: Sequence[Example], outputs: Sequence[RowOutput]
) -> list[tuple[Example, RowOutput]]:
    found = {o.data_row_id: o for o in outputs}
    return [(e, found[e.data_row_id]) for e in examples if e.data_row_id in found]


def evaluate(
    dataset: PreparedDataset,
    hp: Hyperparameters,
    model_run_id: str,
    eval_examples: Sequence[Example],
    eval_outputs: Sequence[RowOutput],
    tune_examples: Sequence[Example] = (),
    tune_outputs: Sequence[RowOutput] = (),
) -> Evaluation:
    classes = dataset.classes
    pairs = _by_id(eval_examples, eval_outputs)
    model_type = dataset.model_type
    rows: list[dict[str, Any]] = []
    if model_type.endswith("single_classification"):
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
    if model_type.endswith("multi_classification"):
        tune = _by_id(tune_examples, tune_outputs)
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
    if model_type == "bounding_box":
        for example, output in pairs:
            rows += predictions.detection_rows(
                model_run_id, classes, example, output, hp.score_threshold
            )
        result = detection_metrics.evaluate(
            [[(b.name, (b.left, b.top, b.width, b.height)) for b in e.boxes] for e, _ in pairs],
            [
                [(b.name, (b.left, b.top, b.width, b.height), b.score) for b in o.boxes]
                for _, o in pairs
            ],
            classes,
        )
        return Evaluation("map50", result["map50"], result, rows)
    for example, output in pairs:
        rows += predictions.ner_rows(model_run_id, classes, example, output)
    result = metrics.spans(
        [{(e.name, e.start, e.end) for e in ex.entities} for ex, _ in pairs],
        [{(s.name, s.start, s.end) for s in o.spans} for _, o in pairs],
        classes,
    )
    return Evaluation("macro_f1", result["macro_f1"], result, rows)
