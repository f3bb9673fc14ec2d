"""The real-node bench's summary: the webhook path against a bare Job, and where time goes.

Pure: the runs' marks in, the README's text out.
"""

from __future__ import annotations

import argparse
import itertools
import statistics

from bench.lib.stats import percentile

from .watch import Run

WEBHOOK, BARE = "webhook", "bare Job"
# Marks in the order they happen; the phases are the gaps between consecutive ones.
MARKS = {
    WEBHOOK: ("post", "answered", "modelrun", "job", "pod", "bound", "export", "prepare", "train"),
    BARE: ("post", "job", "pod", "bound", "export", "prepare", "train"),
}
MARK_TEXT = {
    "post": "request sent",
    "answered": "POST answered (201)",
    "modelrun": "ModelRun seen",
    "job": "Job seen",
    "pod": "pod seen",
    "bound": "pod bound",
    "export": "`export` running",
    "prepare": "`prepare` running",
    "train": "`train` running",
}


def summarise(
    results: dict[str, list[Run]],
    failures: list[str],
    info: dict[str, str],
    args: argparse.Namespace,
) -> str:
    w = [r.total for r in results[WEBHOOK]]
    b = [r.total for r in results[BARE]]
    n = min(len(w), len(b))
    lines = [
        f"`bench/realnode_bench.py`: on the testbed's real node, the time from a signed "
        f"`POST /model_run` (to the webhook's Service ClusterIP; the webhook and the operator "
        f"run as the chart's pods) until the trainer pod's `train` container is running, "
        f"against a bare `batch/v1` Job with the same spec and pod template created straight "
        f"with the API by the same client, timed from the create to the same point. Both run "
        f"the real `export` and `prepare` init containers against a fake Labelbox on the node's "
        f"bridge ({args.rows} text rows each); both images are imported into the node "
        f"beforehand. {n} interleaved pairs (the order alternating) after one unmeasured "
        f"warm-up of each; every run is cleaned up (pod gone) before the next. Times are taken "
        f"on this machine when the watch events (ModelRuns, Jobs, pods) arrive.",
        "",
        f"Machine: `nproc` = {info['nproc']}, {info['mem_gib']} GiB, {info['cpu']}, "
        f"kernel {info['kernel']}, Python {info['python']}; the control plane, the node, the "
        f"pods and the benchmark share it. Load average (1 min) before/after: "
        f"{info['load_before']}/{info['load']}. Run on {info['date']} at commit "
        f"{info['commit']}: `{info['command']}`. Images: `{info['images']}`.",
        "",
        "| path | runs | p50 s | p99 s | mean s | min s | max s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, values in ((WEBHOOK, w), (BARE, b)):
        label = (
            "webhook (POST → `train` running)"
            if kind == WEBHOOK
            else "bare Job (create → `train` running)"
        )
        lines.append(
            f"| {label} | {len(values)} | {percentile(values, 50):.2f} | "
            f"{percentile(values, 99):.2f} | {statistics.fmean(values):.2f} | "
            f"{min(values):.2f} | {max(values):.2f} |"
        )
    lines.append(
        f"| **ratio webhook / bare** | | **{percentile(w, 50) / percentile(b, 50):.2f}** | "
        f"**{percentile(w, 99) / percentile(b, 99):.2f}** | "
        f"**{statistics.fmean(w) / statistics.fmean(b):.2f}** | | |"
    )
    diffs = [x.total - y.total for x, y in zip(results[WEBHOOK], results[BARE], strict=False)]
    lines += [
        "",
        f"Webhook minus bare Job within a pair: median {statistics.median(diffs):+.2f} s, "
        f"mean {statistics.fmean(diffs):+.2f} s.",
        "",
        "Where the time goes: the median of each mark's time since the request or create "
        "(*at*), and of each phase, from the mark before it (*phase*; the POST's answer is "
        "off that chain: the ModelRun's watch event can arrive before it), in milliseconds:",
        "",
        "| mark | webhook at | webhook phase | bare Job at | bare Job phase |",
        "|---|---:|---:|---:|---:|",
    ]
    cells: dict[tuple[str, str], tuple[float, float]] = {}
    for kind in (WEBHOOK, BARE):
        chain = [m for m in MARKS[kind] if m != "answered"]
        prev_of = {cur: prev for prev, cur in itertools.pairwise(chain)} | {"answered": "post"}
        for mark in MARKS[kind][1:]:
            runs = [r for r in results[kind] if mark in r.marks and prev_of[mark] in r.marks]
            if runs:
                at = statistics.median(r.marks[mark] - r.marks["post"] for r in runs)
                gap = statistics.median(r.marks[mark] - r.marks[prev_of[mark]] for r in runs)
                cells[kind, mark] = (at * 1000, gap * 1000)

    def cell(kind: str, mark: str) -> str:
        if (kind, mark) not in cells:
            return " | "
        at, gap = cells[kind, mark]
        return f"{at:,.0f} | {gap:,.0f}"

    for mark in MARKS[WEBHOOK][1:]:
        lines.append(f"| {MARK_TEXT[mark]} | {cell(WEBHOOK, mark)} | {cell(BARE, mark)} |")
    wc = [r.cleanup_s for r in results[WEBHOOK]]
    bc = [r.cleanup_s for r in results[BARE]]
    lines += [
        "",
        "The bare Job's *Job seen* phase runs from its create; the webhook path's extra steps "
        "are the POST (the webhook's ModelRun create), the ModelRun's watch event and the "
        "operator's Job create, up to *Job seen*. Cleanup (untimed above, between runs: delete, "
        f"then the pod gone): median {statistics.median(wc):.1f} s after a webhook run, "
        f"{statistics.median(bc):.1f} s after a bare Job.",
        "",
        f"Failed pairs (dropped whole, not in the figures): {len(failures)}"
        + "".join(f"\n- {f[:300]}" for f in failures),
    ]
    return "\n".join(lines)
