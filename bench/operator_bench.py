"""Benchmark of `lbtrain operator`: N ModelRuns at once, against the API server's own Job ceiling.

    .venv/bin/python bench/operator_bench.py [--sizes 100,500,1000] [--concurrency 32]
                                             [--kubelet-concurrency 16] [--profile] [--no-write]
    .venv/bin/python bench/operator_bench.py --smoke   # seconds: checks the bench still runs

Starts a testbed control plane (etcd, kube-apiserver, kube-controller-manager from
lbtrain_dev.testbed), installs the CRDs and a fake Labelbox (`FakeLabelbox.in_thread`, spoken to by
the real SDK inside the operator). For each size N, in fresh namespaces:

1. **ceiling**: N Jobs of exactly the operator's shape (`jobspec.build_job`, each owned by its
   own ModelRun, created untimed beforehand in a namespace no operator watches) created by a
   plain `KubeClient` at `--concurrency` requests in flight: the rate this API server creates
   Jobs at. The namespace is then deleted (and waited for) before the operator phase. With the
   pairs (a plain client creating each ModelRun, then its Job), it is measured
   `--ceiling-repeats` (3) times and the median used.
2. **operator**: `python -m lbtrain operator` (a subprocess, default flags, JSON logs to a file)
   watches a new namespace holding one TrainingTemplate and the `lbtrain-labelbox` Secret. Once a
   canary run (no template, so it fails at once and is reported FAILED) proves the watches, the
   daemons and the Labelbox SDK are up, N ModelRuns are created at `--concurrency`; watches on
   Jobs and ModelRuns record when each Job appears. When every Job exists, a fake kubelet in a
   separate process (`FakeKubelet`: schedule, run_stage export/prepare/train, succeed) drives
   every pod to success, and the run ends when every ModelRun's `status.labelbox.acknowledged`
   is COMPLETE. The fake Labelbox must then hold exactly EXPORTING_DATA, PREPARING_DATA,
   TRAINING_MODEL, COMPLETE for every run. The Job phase (up to every Job existing) runs
   `--job-phase-repeats` (3) times, each right after a ceiling measurement and compared with it;
   all but the last stop there. The ratios reported are the medians of these pairs.

Operator peak memory is its VmHWM (peak RSS) from /proc; CPU seconds come from /proc for the
operator, kube-apiserver + etcd and kube-controller-manager. The operator's Job rate is N over
the time from the first ModelRun create to the last Job seen; the goal is at least half the
ceiling at N = 1000, and peak RSS under 300 MiB. `--profile` runs the operator under cProfile and
prints where its event-loop thread spends CPU (README untouched). `--smoke` runs one tiny size
once, writes nothing, and exits non-zero when any run did not reach COMPLETE with its full
timeline (tests/test_bench_smoke.py runs it in `make test`).

The phases live in `bench/opbench/` (ceiling, operator phase, fake kubelet, report); what every
bench shares in `bench/lib/`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*`, as mypy sees it
from bench.lib.machine import load, machine, revision, utc_now
from bench.lib.operator import API_KEY
from bench.lib.readme import write_block
from bench.lib.testbed import control_plane
from bench.opbench.ceiling import Ceiling, ceiling, median_ceiling
from bench.opbench.phase import OperatorRun, Setup, operator_phase
from bench.opbench.report import SECTION_INTRO, report
from lbtrain.kube import KubeClient, load_config
from lbtrain_dev.fake_labelbox import FakeLabelbox

# The code under test: the operator, the shared library and the webhook (it builds the ModelRuns).
CODE_UNDER_TEST = ("operator", "lbtrain", "webhook")
SMOKE = {"sizes": "4", "ceiling_repeats": 1, "job_phase_repeats": 1, "stall": 30.0}


async def measure(setup: Setup, n: int) -> tuple[Ceiling, OperatorRun]:
    """One N: the ceiling and pairs `--ceiling-repeats` times; after each of the last
    `--job-phase-repeats` of them, one operator phase (all but the last stop once every Job
    exists). The machine's speed drifts within minutes, so each Job phase is compared with the
    ceiling measured just before it."""
    args = setup.args
    print(f"N = {n}: ceiling", flush=True)
    repeats: list[Ceiling] = []
    paired: list[tuple[float, float, float]] = []
    problems: list[str] = []
    first_paired = args.ceiling_repeats - args.job_phase_repeats
    for k in range(args.ceiling_repeats):
        one = await ceiling(setup.kube, n, args.concurrency, setup.fake, setup.pids)
        print(
            f"  {one.rate(n):.1f} Jobs/s ({one.seconds:.1f}s); "
            f"pairs {one.pair_rate(n):.1f}/s ({one.pair_seconds:.1f}s); "
            f"namespaces gone after {one.cleanup_s:.0f}s",
            flush=True,
        )
        repeats.append(one)
        if first_paired <= k < args.ceiling_repeats - 1:
            print(f"N = {n}: operator, Job phase only", flush=True)
            early = await operator_phase(setup, n, jobs_only=True)
            paired.append((one.rate(n), one.pair_rate(n), early.rate()))
            problems += [f"Job phase {len(paired)}: {p}" for p in early.problems]
    print(f"N = {n}: operator", flush=True)
    op = await operator_phase(setup, n, jobs_only=args.jobs_only)
    last = repeats[-1]
    op.paired = [*paired, (last.rate(n), last.pair_rate(n), op.rate())]
    op.problems = problems + op.problems
    return median_ceiling(n, repeats), op


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500,1000", help="comma-separated run counts")
    parser.add_argument("--concurrency", type=int, default=32, help="client requests in flight")
    parser.add_argument(
        "--ceiling-repeats",
        type=int,
        default=3,
        help="measure the ceiling and the pairs this many times per N; the median is used",
    )
    parser.add_argument(
        "--job-phase-repeats",
        type=int,
        default=3,
        help="run the operator's Job phase this many times per N (at most --ceiling-repeats), "
        "each right after a ceiling measurement; the ratios are medians of these pairs",
    )
    parser.add_argument(
        "--kubelet-concurrency", type=int, default=16, help="pods the fake kubelet drives at once"
    )
    parser.add_argument(
        "--timeout-scale", type=float, default=1.0, help="multiply every phase's timeout"
    )
    parser.add_argument(
        "--stall",
        type=float,
        default=120.0,
        help="stop waiting for COMPLETE once every Job is Complete and nothing moved this long",
    )
    parser.add_argument(
        "--profile", action="store_true", help="run the operator under cProfile (no README)"
    )
    parser.add_argument(
        "--jobs-only",
        action="store_true",
        help="stop once every Job exists: no fake kubelet, no COMPLETE (no README)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update bench/README.md")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"one tiny size, once ({SMOKE}), no README: checks that the bench still runs",
    )
    parser.add_argument(
        "--keep", type=Path, help="run the control plane in this folder and keep its logs"
    )
    parser.add_argument(
        "--operator-source",
        type=Path,
        help="run the operator of this checkout instead (e.g. a `git worktree` of an older "
        "commit), to compare two versions under the same load; no README",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE, no_write=True)
    if args.operator_source is not None:
        if not (args.operator_source / "operator" / "lbtrain_operator").is_dir():
            parser.error(f"--operator-source {args.operator_source}: no operator/lbtrain_operator")
        args.no_write = True
    if args.ceiling_repeats < 1:
        parser.error(f"--ceiling-repeats must be at least 1, not {args.ceiling_repeats}")
    if not 1 <= args.job_phase_repeats <= args.ceiling_repeats:
        parser.error(
            f"--job-phase-repeats must be between 1 and --ceiling-repeats "
            f"({args.ceiling_repeats}), not {args.job_phase_repeats}"
        )
    return args


def failures(rows: list[tuple[Ceiling, OperatorRun]], jobs_only: bool) -> list[str]:
    """Why the run does not stand: a phase's problems, or a run without its full timeline."""
    out = [f"N = {op.n}: {p}" for _, op in rows for p in op.problems]
    if not jobs_only:
        out += [
            f"N = {op.n}: {op.full_timelines}/{op.n} full Labelbox timelines"
            for _, op in rows
            if op.full_timelines < op.n
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    load_before, started, wall = load(), utc_now(), time.monotonic()
    commit, code = revision(), revision(*CODE_UNDER_TEST)  # before any later commit moves HEAD
    rows: list[tuple[Ceiling, OperatorRun]] = []
    with (
        control_plane(args.keep, prefix="lbtrain-opbench-") as plane,
        FakeLabelbox.in_thread(api_key=API_KEY) as fake,
    ):
        pids = dict(plane.state.pids)

        async def run_all() -> None:
            config = load_config(str(plane.kubeconfig))
            async with KubeClient(config, request_timeout=60) as kube:
                setup = Setup(kube, plane.kubeconfig, args, fake, pids)
                for n in sizes:
                    rows.append(await measure(setup, n))

        asyncio.run(run_all())
    table = report(rows, args.concurrency, args.kubelet_concurrency)
    print()
    print(table)
    broken = failures(rows, args.jobs_only)
    for _, op in rows:  # the result line the smoke test looks for
        print(
            f"operator_bench: N = {op.n}: ratio to ceiling {op.ratio_to_ceiling():.2f}, "
            f"to pairs {op.ratio_to_pairs():.2f}; full timelines {op.full_timelines}/{op.n}"
        )
    if broken:
        print("operator_bench: FAILED\n" + "\n".join(f"- {b}" for b in broken), file=sys.stderr)
        return 1
    if args.profile or args.no_write or args.jobs_only:
        return 0
    intro = SECTION_INTRO.format(
        concurrency=args.concurrency,
        repeats=args.ceiling_repeats,
        job_repeats=args.job_phase_repeats,
    )
    command = "bench/operator_bench.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    generated = (
        f"{intro}"
        f"\nRun on {started} at commit {commit} (`{command}`); the operator, library and "
        f"webhook code last changed at {code}. Machine: {machine()}. "
        f"Load average (1/5/15 min) before: {load_before}, after: {load()} (the machine is "
        f"shared). Whole run: {(time.monotonic() - wall) / 60:.0f} min.\n\n{table}\n"
    )
    write_block("operator_bench.py", generated, "## operator")
    print("\nwritten to bench/README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
