"""Quantiles, one definition each, so that a p99 means the same in every table.

Two definitions are in use on purpose: `quantile` is the nearest rank (a value that was
measured; the operator bench's thousands of latencies), `percentile` interpolates between
ranks as numpy does by default (the real-node bench's 20 runs, where p99 lands between the two
slowest). Both answer NaN for no values rather than raise: a phase that measured nothing shows
as `nan` in its table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 <= q <= 1) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: Sequence[float]) -> float:
    """The nearest-rank median: for an even count, the upper of the two middle values."""
    return quantile(values, 0.5)


def percentile(values: Sequence[float], q: float) -> float:
    """The `q` percentile (0 <= q <= 100), interpolated linearly between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ratio(numerator: float, denominator: float) -> float:
    """`numerator / denominator`, or nan when the baseline measured nothing (a cell with no
    request done on an overloaded machine): a table shows `nan` rather than the script dying."""
    return numerator / denominator if denominator else float("nan")
