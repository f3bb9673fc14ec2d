"""Detection metrics: IoU, per-class average precision, mAP at IoU 0.5 and 0.5:0.95.

Average precision uses all-point interpolation of the precision/recall curve (as Pascal VOC
2010+ and COCO do per threshold); boxes are ``(left, top, width, height)`` in pixels. Plain
Python, so the numbers are tested by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

BoxT = tuple[float, float, float, float]  # left, top, width, height


def iou(a: BoxT, b: BoxT) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match(
    truth: Sequence[BoxT], detections: Sequence[tuple[BoxT, float]], threshold: float
) -> list[bool]:
    """Greedy matching by descending score; True where a detection is a true positive."""
    order = sorted(range(len(detections)), key=lambda i: -detections[i][1])
    used: set[int] = set()
    hits = [False] * len(detections)
    for i in order:
        best, best_iou = -1, threshold
        for j, gt in enumerate(truth):
            if j not in used and (value := iou(detections[i][0], gt)) >= best_iou:
                best, best_iou = j, value
        if best >= 0:
            used.add(best)
            hits[i] = True
    return hits


def average_precision(
    truth: Sequence[Sequence[BoxT]],
    detections: Sequence[Sequence[tuple[BoxT, float]]],
    threshold: float,
) -> float | None:
    """AP of one class over images; ``None`` when the class has no ground truth box."""
    total = sum(len(t) for t in truth)
    if total == 0:
        return None
    scored: list[tuple[float, bool]] = []
    for gt, det in zip(truth, detections, strict=True):
        scored += [(d[1], hit) for d, hit in zip(det, match(gt, det, threshold), strict=True)]
    scored.sort(key=lambda s: -s[0])
    tp = fp = 0
    points = []
    for _, hit in scored:
        tp, fp = tp + hit, fp + (not hit)
        points.append((tp / total, tp / (tp + fp)))
    ap, prev_recall = 0.0, 0.0
    for i, (recall, _) in enumerate(points):
        precision = max(p for _, p in points[i:])  # interpolated: best precision at >= recall
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def evaluate(
    truth: Sequence[Sequence[tuple[str, BoxT]]],
    detections: Sequence[Sequence[tuple[str, BoxT, float]]],
    classes: Sequence[str],
) -> dict[str, Any]:
    """mAP@0.5, mAP@0.5:0.95 and a per-class table (AP@0.5, support)."""
    per_class: dict[str, Any] = {}
    maps: dict[float, list[float]] = {}
    thresholds = [0.5 + 0.05 * i for i in range(10)]
    for cls in classes:
        gt = [[b for name, b in row if name == cls] for row in truth]
        det = [[(b, s) for name, b, s in row if name == cls] for row in detections]
        aps = {t: average_precision(gt, det, t) for t in thresholds}
        support = sum(len(g) for g in gt)
        if support:
            for t, ap in aps.items():
                maps.setdefault(t, []).append(ap or 0.0)
        per_class[cls] = {"ap50": round(aps[0.5] or 0.0, 4), "support": support}
    map50 = sum(maps.get(0.5, [0.0])) / max(1, len(maps.get(0.5, [])))
    coco = [sum(v) / len(v) for v in maps.values()] if maps else [0.0]
    return {
        "map50": round(map50, 4),
        "map": round(sum(coco) / len(coco), 4),
        "per_class": per_class,
        "count": len(truth),
    }
