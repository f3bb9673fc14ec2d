"""Labelbox NDJSON rows for predictions (with confidences) and per-row metrics.

Shapes follow docs/labelbox.md §5.3-5.5: radio answers are an object, checklist answers a list,
boxes are ``bbox`` in original pixels, entities are ``location`` with an **inclusive** ``end``.
Metric rows ride in the same import (§5.4): a scalar per row and a per-class confusion matrix
``[TP, FP, TN, FN]``, never under a reserved metric name. Prediction ``uuid`` values derive from
the model run, the data row and the position, so re-uploading after a restart replaces rather
than duplicates.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from lbtrain_trainer.detection_metrics import iou, match
from lbtrain_trainer.manifest import Example
from lbtrain_trainer.outputs import RowOutput

NAMESPACE = uuid.UUID("5f0c6a53-7a4e-4c87-9a43-0b6f1e0d2c11")
RESERVED_METRIC_NAMES = frozenset(
    {
        "true_positive_count",
        "false_positive_count",
        "true_negative_count",
        "false_negative_count",
        "precision",
        "recall",
        "f1",
        "iou",
    }
)
CONFUSION = "CONFUSION_MATRIX"
MEAN = "ARITHMETIC_MEAN"


def prediction_uuid(model_run_id: str, data_row_id: str, kind: str, index: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{model_run_id}/{data_row_id}/{kind}/{index}"))


def _conf(value: float) -> float:
    return round(min(1.0, max(0.0, float(value))), 4)


def scalar_metric(
    data_row_id: str, name: str, value: float, feature: str | None = None
) -> dict[str, Any]:
    assert name not in RESERVED_METRIC_NAMES
    row: dict[str, Any] = {
        "dataRow": {"id": data_row_id},
        "metricValue": round(float(value), 4),
        "metricName": name,
        "aggregation": MEAN,
    }
    if feature:
        row["featureName"] = feature
    return row


def confusion_metric(
    data_row_id: str,
    name: str,
    counts: tuple[int, int, int, int],
    feature: str,
    subclass: str | None = None,
) -> dict[str, Any]:
    assert name not in RESERVED_METRIC_NAMES
    row: dict[str, Any] = {
        "dataRow": {"id": data_row_id},
        "metricValue": list(counts),
        "metricName": name,
        "featureName": feature,
        "aggregation": CONFUSION,
    }
    if subclass:
        row["subclassName"] = subclass
    return row


def classification_rows(
    model_run_id: str,
    feature: str,
    classes: Sequence[str],
    example: Example,
    output: RowOutput,
    selected: Sequence[str],
    multi: bool,
) -> list[dict[str, Any]]:
    """A radio row (single) or a checklist row (multi, omitted when nothing is selected),
    a scalar metric (single: correct or not; multi: Jaccard index of the answer sets) and a
    confusion matrix per answer."""
    row_id = example.data_row_id
    score = dict(zip(classes, output.scores, strict=True))
    rows: list[dict[str, Any]] = []
    base: dict[str, Any] = {
        "uuid": prediction_uuid(model_run_id, row_id, "classification", 0),
        "dataRow": {"id": row_id},
        "name": feature,
    }
    if multi:
        if selected:
            answers = [{"name": c, "confidence": _conf(score[c])} for c in selected]
            rows.append({**base, "answer": answers})
    else:
        rows.append(
            {**base, "answer": {"name": selected[0], "confidence": _conf(score[selected[0]])}}
        )
    truth, chosen = set(example.labels), set(selected)
    union = truth | chosen
    value = len(truth & chosen) / len(union) if union else 1.0
    rows.append(scalar_metric(row_id, "jaccard" if multi else "accuracy", value, feature))
    for cls in classes:
        t, p = cls in truth, cls in chosen
        counts = (int(t and p), int(p and not t), int(not t and not p), int(t and not p))
        rows.append(confusion_metric(row_id, "answer_confusion", counts, feature, cls))
    return rows


def detection_rows(
    model_run_id: str,
    classes: Sequence[str],
    example: Example,
    output: RowOutput,
    score_threshold: float,
) -> list[dict[str, Any]]:
    """Box rows above the threshold; per row, mean IoU of the ground-truth boxes with their best
    prediction, and per class a confusion matrix at IoU 0.5 (TN is not defined for boxes: 0)."""
    row_id = example.data_row_id
    kept = [b for b in output.boxes if b.score >= score_threshold]
    rows: list[dict[str, Any]] = [
        {
            "uuid": prediction_uuid(model_run_id, row_id, "bbox", i),
            "dataRow": {"id": row_id},
            "name": b.name,
            "confidence": _conf(b.score),
            "bbox": {
                "top": round(b.top, 2),
                "left": round(b.left, 2),
                "height": round(b.height, 2),
                "width": round(b.width, 2),
            },
        }
        for i, b in enumerate(kept)
    ]
    if example.boxes:
        best = [
            max(
                (
                    iou((t.left, t.top, t.width, t.height), (p.left, p.top, p.width, p.height))
                    for p in kept
                    if p.name == t.name
                ),
                default=0.0,
            )
            for t in example.boxes
        ]
        rows.append(scalar_metric(row_id, "box_miou", sum(best) / len(best)))
    for cls in classes:
        truth = [(t.left, t.top, t.width, t.height) for t in example.boxes if t.name == cls]
        preds = [((p.left, p.top, p.width, p.height), p.score) for p in kept if p.name == cls]
        if not truth and not preds:
            continue
        tp = sum(match(truth, preds, 0.5))
        rows.append(
            confusion_metric(row_id, "iou50", (tp, len(preds) - tp, 0, len(truth) - tp), cls)
        )
    return rows


def ner_rows(
    model_run_id: str, classes: Sequence[str], example: Example, output: RowOutput
) -> list[dict[str, Any]]:
    """Entity rows with inclusive ``end``; per class an exact-match confusion matrix and a
    per-row entity F1 (named ``entity_f1``: ``f1`` is reserved)."""
    row_id = example.data_row_id
    rows: list[dict[str, Any]] = [
        {
            "uuid": prediction_uuid(model_run_id, row_id, "entity", i),
            "dataRow": {"id": row_id},
            "name": s.name,
            "confidence": _conf(s.confidence),
            "location": {"start": s.start, "end": s.end},
            "classifications": [],
        }
        for i, s in enumerate(output.spans)
    ]
    truth = {(e.name, e.start, e.end) for e in example.entities}
    preds = {(s.name, s.start, s.end) for s in output.spans}
    if truth or preds:
        tp = len(truth & preds)
        f1 = 2 * tp / (len(truth) + len(preds))
        rows.append(scalar_metric(row_id, "entity_f1", f1))
    for cls in classes:
        t = {s for s in truth if s[0] == cls}
        p = {s for s in preds if s[0] == cls}
        if t or p:
            rows.append(
                confusion_metric(
                    row_id, "exact_match", (len(t & p), len(p - t), 0, len(t - p)), cls
                )
            )
    return rows
