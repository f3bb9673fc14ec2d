"""Evaluation metrics for classification and NER, in plain Python.

Run-level results go into the model run config (accuracy, macro-F1, a per-class table) and
the termination summary; per-row values become Labelbox metric rows. Nothing here needs torch,
so the numbers are tested against hand-computed ones. Detection metrics live in
:mod:`lbtrain_trainer.detection_metrics`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _per_class(counts: dict[str, tuple[int, int, int]], support: Counter[str]) -> dict[str, Any]:
    table = {}
    for cls, (tp, fp, fn) in counts.items():
        p, r, f = _prf(tp, fp, fn)
        table[cls] = {
            "precision": round(p, 4),
            "recall": round(r, 4),
            "f1": round(f, 4),
            "support": support[cls],
        }
    return table


def single_label(
    true: Sequence[int], pred: Sequence[int], classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    n = len(true)
    matrix = [[0] * len(classes) for _ in classes]
    for t, p in zip(true, pred, strict=True):
        matrix[t][p] += 1
    counts = {}
    for k, cls in enumerate(classes):
        tp = matrix[k][k]
        counts[cls] = (tp, sum(matrix[i][k] for i in range(len(classes))) - tp, sum(matrix[k]) - tp)
    support = Counter({cls: sum(matrix[k]) for k, cls in enumerate(classes)})
    per_class = _per_class(counts, support)
    present = [c for c in classes if support[c]] or list(classes)
    return {
        "accuracy": round(sum(matrix[k][k] for k in range(len(classes))) / n, 4) if n else 0.0,
        "macro_f1": round(sum(per_class[c]["f1"] for c in present) / len(present), 4),
        "per_class": per_class,
        "confusion_matrix": matrix,
        "count": n,
    }


def multi_label(
    true: Sequence[set[str]], pred: Sequence[set[str]], classes: Sequence[str]
) -> dict[str, Any]:
    """Micro/macro F1, exact-match (subset) accuracy and per-class precision/recall/F1."""
    counts = {}
    for cls in classes:
        tp = sum(1 for t, p in zip(true, pred, strict=True) if cls in t and cls in p)
        fp = sum(1 for t, p in zip(true, pred, strict=True) if cls not in t and cls in p)
        fn = sum(1 for t, p in zip(true, pred, strict=True) if cls in t and cls not in p)
        counts[cls] = (tp, fp, fn)
    support = Counter(c for t in true for c in t)
    per_class = _per_class(counts, support)
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    present = [c for c in classes if support[c]] or list(classes)
    n = len(true)
    return {
        "micro_f1": round(_prf(tp, fp, fn)[2], 4),
        "macro_f1": round(sum(per_class[c]["f1"] for c in present) / len(present), 4),
        "subset_accuracy": round(sum(1 for t, p in zip(true, pred, strict=True) if t == p) / n, 4)
        if n
        else 0.0,
        "per_class": per_class,
        "count": n,
    }


def tune_thresholds(
    scores: Sequence[Sequence[float]],
    true: Sequence[set[str]],
    classes: Sequence[str],
    default: float,
) -> list[float]:
    """Per class, the probability threshold with the best F1 on the tuning rows.

    A class with no positive tuning row keeps ``default``; ties go to the threshold closest to
    ``default`` so that an easy validation set does not push thresholds to an extreme.
    """
    candidates = [i / 20 for i in range(1, 20)]
    thresholds = []
    for k, cls in enumerate(classes):
        if not any(cls in t for t in true):
            thresholds.append(default)
            continue
        best = (-1.0, 0.0, default)
        for threshold in candidates:
            tp = fp = fn = 0
            for row, labels in zip(scores, true, strict=True):
                predicted, actual = row[k] >= threshold, cls in labels
                tp += predicted and actual
                fp += predicted and not actual
                fn += actual and not predicted
            key = (_prf(tp, fp, fn)[2], -abs(threshold - default), threshold)
            if key[:2] > best[:2]:
                best = key
        thresholds.append(best[2])
    return thresholds


def spans(
    true: Sequence[set[tuple[str, int, int]]],
    pred: Sequence[set[tuple[str, int, int]]],
    classes: Sequence[str],
) -> dict[str, Any]:
    """Entity-level exact-match precision/recall/F1 (micro, macro, per class)."""
    counts = {}
    for cls in classes:
        tp = fp = fn = 0
        for t, p in zip(true, pred, strict=True):
            tc = {s for s in t if s[0] == cls}
            pc = {s for s in p if s[0] == cls}
            tp, fp, fn = tp + len(tc & pc), fp + len(pc - tc), fn + len(tc - pc)
        counts[cls] = (tp, fp, fn)
    support = Counter(s[0] for t in true for s in t)
    per_class = _per_class(counts, support)
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    precision, recall, f1 = _prf(tp, fp, fn)
    present = [c for c in classes if support[c]] or list(classes)
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "micro_f1": round(f1, 4),
        "macro_f1": round(sum(per_class[c]["f1"] for c in present) / len(present), 4),
        "per_class": per_class,
        "count": len(true),
    }
