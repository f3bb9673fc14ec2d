"""The operator bench's write-up: the tables, the goals, and the text around them.

Pure functions of the measured rows (no I/O but `show_profile`'s print), so the README's block
can be checked without running the bench.
"""

from __future__ import annotations

import pstats
from pathlib import Path

from bench.lib.stats import quantile

from .ceiling import Ceiling
from .phase import EARLY_S, LATE_S, OperatorRun

GOAL_RATIO = 0.5
GOAL_RSS_MIB = 300.0


def show_profile(path: Path) -> None:
    if not path.exists():
        print(f"no profile written at {path}")
        return
    stats = pstats.Stats(str(path))
    stats.strip_dirs()
    print("\n=== operator profile (main thread), by own time ===")
    stats.sort_stats("tottime").print_stats(30)
    print("\n=== by cumulative time ===")
    stats.sort_stats("cumulative").print_stats(45)


def report(rows: list[tuple[Ceiling, OperatorRun]], concurrency: int, kubelet: int) -> str:
    lines = [
        "| N | ceiling Jobs/s | ModelRun+Job pairs/s | ModelRun creates/s "
        "| every Job exists (s) | operator Jobs/s | ratio to ceiling | ratio to pairs "
        "| run → Job p50 / p99 (s) | every run COMPLETE (s) "
        "| peak RSS (MiB) | RSS / 300 MiB | operator CPU (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ceil, op in rows:
        lines.append(
            f"| {op.n} | {ceil.rate(op.n):,.0f} | {ceil.pair_rate(op.n):,.0f} "
            f"| {op.n / op.create_s:,.0f} | {op.jobs_s:.1f} "
            f"| {op.paired_rate():,.1f} | {op.ratio_to_ceiling():.2f} "
            f"| {op.ratio_to_pairs():.2f} "
            f"| {quantile(op.job_latency, 0.5):.1f} / {quantile(op.job_latency, 0.99):.1f} "
            f"| {op.done_s(op.complete_s)} | {op.peak_rss_mib:.0f} "
            f"| {op.peak_rss_mib / GOAL_RSS_MIB:.2f} "
            f"| {op.cpu_total:.1f} |"
        )
    lines += [
        "",
        "Until every Job exists (seconds from the first ModelRun create; CPU seconds from /proc "
        "over the same span, with the share of one core in parentheses):",
        "",
        "| N | ModelRun creates done | first Job | every Job | first → last Job: Jobs/s "
        "| operator CPU | apiserver+etcd CPU | benchmark CPU | operator retries after API "
        "errors (whole run) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, op in rows:
        lines.append(
            f"| {op.n} | {op.create_s:.1f} | {op.first_job_s:.2f} | {op.jobs_s:.1f} "
            f"| {op.n / op.jobs_window_s:,.1f} | {op.cpu_jobs:.1f} ({op.cpu_jobs / op.jobs_s:.0%}) "
            f"| {op.cpu_api_jobs:.1f} ({op.cpu_api_jobs / op.jobs_s:.0%}) "
            f"| {op.cpu_bench_jobs:.1f} ({op.cpu_bench_jobs / op.jobs_s:.0%}) | {op.retries} |"
        )
    lines += [
        "",
        "From every Job existing to every run COMPLETE in Labelbox (seconds; *go* is when the "
        "fake kubelet starts). Pods are created and Jobs marked Complete by "
        "kube-controller-manager, whose client is limited to 20 requests/s (its default "
        "`--kube-api-qps`), so *every Job Complete* is mostly the controller manager's figure; the "
        "operator's own share is the lag from a Job's Complete to Labelbox acknowledging COMPLETE "
        "(both seen on this benchmark's watches; *Labelbox got it* times COMPLETE's arrival at the "
        "fake Labelbox instead). Negative lags are real: the operator acts on the Job's "
        "`SuccessCriteriaMet` condition, which the Job controller sets a write before "
        "`Complete`. *Late* counts "
        f"runs acknowledged more than {LATE_S:.0f} s after their Job's Complete, split by "
        f"whether the Job completed in the first {EARLY_S:.0f} s after the first Job Complete "
        "(when a burst's held writes are still being stored) or later.",
        "",
        "| N | go → every pod created | go → every pod succeeded | go → every Job Complete "
        "| go → every COMPLETE acked | Job Complete → acked p50 / p99 / max "
        "| Job Complete → Labelbox got it p50 / p99 / max | late: early / later "
        "| Labelbox updates "
        "| full timelines | RSS idle / Jobs / end (MiB) | operator CPU ms/run: to Job / all "
        "| apiserver+etcd CPU (s) | controller-manager CPU (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, op in rows:
        ms_per_run = (op.cpu_total - op.cpu_startup) / op.n * 1000
        lines.append(
            f"| {op.n} | {op.pods_s:.1f} | {op.drive_s:.1f} | {op.jobs_complete_s:.1f} "
            f"| {op.done_s(op.after_go_s)} "
            f"| {quantile(op.lag, 0.5):.2f} / {quantile(op.lag, 0.99):.2f} / "
            f"{max(op.lag, default=float('nan')):.2f} "
            f"| {quantile(op.lb_lag, 0.5):.2f} / {quantile(op.lb_lag, 0.99):.2f} / "
            f"{max(op.lb_lag, default=float('nan')):.2f} "
            f"| {op.late_early} / {op.late_later} | {op.status_updates:,} "
            f"| {op.full_timelines}/{op.n} "
            f"| {op.rss_idle_mib:.0f} / {op.rss_jobs_mib:.0f} / {op.rss_end_mib:.0f} "
            f"| {op.cpu_jobs / op.n * 1000:.0f} / {ms_per_run:.0f} "
            f"| {op.cpu_apiserver_etcd:.1f} | {op.cpu_kcm:.1f} |"
        )
    keys = sorted({k for _, op in rows for k in op.requests}, key=lambda k: k.split()[::-1])
    lines += [
        "",
        "API requests per run, from kube-apiserver's `apiserver_request_total`, until every Job "
        "exists / over the whole operator phase. Every client counts: the operator, the "
        "controller manager, and this benchmark, whose share is 1 `POST modelruns` (and, after "
        "*go*, 1 `POST pods/binding` and 5 `PATCH pods/status`) per run; the ceiling is 1 `POST "
        "jobs` per Job.",
        "",
        "| request | " + " | ".join(f"N = {op.n}" for _, op in rows) + " |",
        "|---|" + "---:|" * len(rows),
    ]
    for key in keys:
        cells = " | ".join(
            f"{op.requests_jobs.get(key, 0.0):.2f} / {op.requests.get(key, 0.0):.2f}"
            for _, op in rows
        )
        lines.append(f"| `{key}` | {cells} |")
    lines += [
        "",
        "Ceiling detail: "
        + "; ".join(
            f"N = {op.n}: median of {len(ceil.rates)} repeats "
            f"({' / '.join(f'{r:,.0f}' for r in ceil.rates)} Jobs/s; pairs "
            f"{' / '.join(f'{r:,.0f}' for r in ceil.pair_rates)} runs/s), "
            f"the median one {ceil.seconds:.1f} s, create p50 "
            f"{quantile(ceil.latencies, 0.5) * 1000:.0f} ms / p99 "
            f"{quantile(ceil.latencies, 0.99) * 1000:.0f} ms, apiserver+etcd CPU "
            f"{ceil.cpu_apiserver_etcd:.1f} s ({ceil.cpu_apiserver_etcd / op.n * 1000:.1f} ms/Job)"
            for ceil, op in rows
        )
        + f". Client concurrency {concurrency} for both the ceiling and the ModelRun creates; "
        f"the fake kubelet drives {kubelet} pods at a time.",
        "",
        "Job phases, each after the ceiling and pairs measured just before it (ceiling Jobs/s / "
        "pairs runs/s → operator Jobs/s: ratio to ceiling / to pairs; the last is the full run): "
        + "; ".join(
            f"N = {op.n}: "
            + ", ".join(
                f"{c:,.0f} / {p:,.0f} → {o:,.1f}: {o / c:.2f} / {o / p:.2f}"
                for c, p, o in op.paired
            )
            for _, op in rows
        )
        + ".",
    ]
    problems = [f"N = {op.n}: {p}" for _, op in rows for p in op.problems + op.bad_samples]
    problems += [
        f"N = {op.n}: {op.stale_status} runs reached COMPLETE in Labelbox but their ModelRun "
        "status never showed it acknowledged"
        for _, op in rows
        if op.stale_status
    ]
    problems += [f"N = {op.n} kubelet: {e}" for _, op in rows for e in op.kubelet_errors[:3]]
    if problems:
        lines += ["", "Problems seen:", *[f"- {p}" for p in problems]]
    big = max(rows, key=lambda r: r[1].n)
    ceil, op = big
    ratio = op.ratio_to_ceiling()
    worst_rss = max(o.peak_rss_mib for _, o in rows)
    each = ", ".join(f"{o / c:.2f}" for c, _, o in op.paired)
    lines += [
        "",
        "Goals:",
        f"- Jobs for {op.n} runs at ≥ {GOAL_RATIO:.0%} of the ceiling: "
        f"{'met' if ratio >= GOAL_RATIO else 'not met'} ({ratio:.2f}, the median of {each}; "
        f"{op.paired_rate():.1f} vs {ceil.rate(op.n):.1f} Jobs/s). Against the floor of this "
        f"design (a plain client creating each ModelRun and then its Job, "
        f"{ceil.pair_rate(op.n):.1f} runs/s): {op.ratio_to_pairs():.2f}.",
        f"- Operator peak RSS < {GOAL_RSS_MIB:.0f} MiB: "
        f"{'met' if worst_rss < GOAL_RSS_MIB else 'not met'} ({worst_rss:.0f} MiB at most).",
    ]
    return "\n".join(lines)


SECTION_INTRO = """\
`bench/operator_bench.py` starts a testbed control plane (etcd with `--unsafe-no-fsync`,
kube-apiserver and kube-controller-manager from `lbtrain_dev.testbed`), installs the CRDs and runs a
fake Labelbox (`FakeLabelbox.in_thread`) that the operator reaches through the real `labelbox`
SDK. For each N, in fresh namespaces:

- **ceiling**: N Jobs of exactly the operator's shape (`jobspec.build_job`, each owned by a
  ModelRun created beforehand, untimed, in a namespace no operator watches) created by a plain
  `KubeClient` with {concurrency} requests in flight: how fast this API server creates Jobs.
  That namespace is deleted and gone before the operator phase starts. Measured {repeats}
  times (with the pairs below), and the median taken: one measurement lasts a few seconds and
  moved by ±25% between runs on this shared machine.
- **pairs**: the floor of this design, in another such namespace: for each run, its ModelRun's
  create and then its Job's, by the same plain client ({concurrency} runs in flight), with no
  operator, watch, finalizer, status write or Event. An operator's Jobs/s over this rate (*ratio
  to pairs*) is its own efficiency; the ceiling's rate cannot be reached by any operator that
  waits for ModelRuns created on the same API server.
- **operator**: `python -m lbtrain operator` as a subprocess with its default settings (resync
  30 s, JSON logs at INFO to a file) watches a new namespace with one TrainingTemplate and the
  `lbtrain-labelbox` Secret. After a canary run proves it is up, N ModelRuns, built as the
  webhook builds them (`build_model_run`: labels, annotations and the operator's finalizer),
  are created with {concurrency} in flight. *Every Job exists* runs from the first create to
  the last Job seen on a watch; the operator's Jobs/s is N over that, so it includes the N
  ModelRun creates it cannot run ahead of. This Job phase runs {job_repeats} times per N, each
  in a fresh namespace with a fresh operator right after one ceiling-and-pairs measurement; the
  first ones stop once every Job exists. *Operator Jobs/s* and both ratios are medians over
  them, each ratio taken against the ceiling and pairs measured just before it: this machine's
  speed drifts within minutes by more than the effects measured here. Every other figure comes
  from the last run, which goes on: a fake kubelet in its own process binds every
  pod and walks it through export, prepare, train and success (`FakeKubelet`), and the clock
  stops when every ModelRun's `status.labelbox.acknowledged` is COMPLETE (or when every Job is
  Complete and no run was acknowledged for `--stall` seconds); the fake Labelbox must hold
  exactly EXPORTING_DATA, PREPARING_DATA, TRAINING_MODEL, COMPLETE for each run (*full
  timelines*).
- Peak RSS is the operator's VmHWM from `/proc`; CPU seconds from `/proc` too.

Everything (control plane, operator, load generator, fake Labelbox and kubelet) shares the
machine, so wall times are pessimistic and drift with other people's jobs; the ratio to the
ceiling measured in the same run is the steadier figure. Rerun:
`.venv/bin/python bench/operator_bench.py` (`--sizes`, `--concurrency`, `--ceiling-repeats`,
`--job-phase-repeats`, `--jobs-only`, `--profile`).
"""
