"""The pure parts of the benches' shared library (`bench/lib`): ids the CRD accepts, quantiles,
and the README block writer that must never touch another bench's block or the text around."""

from __future__ import annotations

import math

import pytest

from bench.lib.ids import random_cuid, run_id
from bench.lib.kube import parse_request_counts, per_run
from bench.lib.readme import markers, with_block
from bench.lib.stats import median, percentile, quantile, ratio
from lbtrain.ids import is_labelbox_id


def test_run_ids_are_labelbox_ids_and_distinct() -> None:
    tags = ["ceil-1000-a1b2c3", "op-5-ffffff", "a-very-long-namespace-name-for-a-bench", "x"]
    ids = [run_id(tag, i) for tag in tags for i in (0, 1, 9, 10, 99999)]
    assert all(is_labelbox_id(i) for i in ids), ids
    assert len(set(ids)) == len(ids)
    assert is_labelbox_id(random_cuid())


def test_quantiles() -> None:
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 3.0  # nearest rank: the upper middle
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([10.0], 99) == 10.0
    assert math.isnan(quantile([], 0.5))
    assert math.isnan(percentile([], 50))


def test_with_block_replaces_only_its_own_block() -> None:
    begin, end = markers("a.py")
    other_begin, other_end = markers("b.py")
    current = (
        f"# Benchmarks\n\n## a\n\nintro\n\n{begin}\nold\n{end}\n\nnotes by hand\n\n"
        f"## b\n\n{other_begin}\nb's\n{other_end}\n"
    )
    updated = with_block(current, "a.py", "new\n", "## a")
    assert updated == current.replace(f"{begin}\nold\n{end}", f"{begin}\nnew\n{end}")


@pytest.mark.parametrize(
    ("current", "expected_order"),
    [
        ("# B\n\n## a\n\nintro\n\n## b\n\nb text\n", ["intro", "<!-- a.py: begin -->", "## b"]),
        ("# B\n\n## b\n\nb text\n", ["## b", "b text", "## a", "<!-- a.py: begin -->"]),
    ],
)
def test_with_block_adds_a_missing_block_to_its_section(
    current: str, expected_order: list[str]
) -> None:
    updated = with_block(current, "a.py", "figures", "## a")
    positions = [updated.index(part) for part in expected_order]
    assert positions == sorted(positions), updated
    assert updated.count("<!-- a.py: begin -->") == 1


def test_request_counts_per_run() -> None:
    metrics = (
        'apiserver_request_total{code="201",resource="jobs",verb="POST"} 100\n'
        'apiserver_request_total{code="409",resource="jobs",verb="POST"} 4\n'
        'apiserver_request_total{resource="modelruns",subresource="status",verb="PATCH"} 250\n'
        'apiserver_request_total{resource="pods",verb="GET"} 3\n'
    )
    after = parse_request_counts(metrics)
    assert after == {"POST jobs": 104.0, "PATCH modelruns/status": 250.0, "GET pods": 3.0}
    # 100 runs: the rare GETs (3 < 100 / 10) are left out.
    assert per_run({"POST jobs": 4.0}, after, 100) == {
        "POST jobs": 1.0,
        "PATCH modelruns/status": 2.5,
    }


def test_a_ratio_over_a_baseline_that_measured_nothing_is_nan_not_a_crash() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert math.isnan(ratio(3.0, 0.0))
