"""One operator phase: N ModelRuns into a fresh namespace, every Job out, then COMPLETE.

`lbtrain operator` (a subprocess, default flags) watches a new namespace. Once a canary run
(no template for its type, so it fails at once and is reported FAILED) proves its watches, its
daemons and the Labelbox SDK are up, N ModelRuns are created; watches on Jobs and ModelRuns
stamp when each Job appears. Unless the phase stops there (`jobs_only`), the fake kubelet then
drives every pod to success, and the phase ends when every ModelRun's
`status.labelbox.acknowledged` is COMPLETE; the fake Labelbox must then hold exactly
EXPORTING_DATA, PREPARING_DATA, TRAINING_MODEL, COMPLETE for every run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from bench.lib.aio import bounded, until, with_retry
from bench.lib.ids import run_id
from bench.lib.kube import Follower, create_namespace, delete_namespace, per_run, request_counts
from bench.lib.operator import Operator, prepare_namespace, run_body, run_name
from bench.lib.procfs import cpu_of, cpu_seconds, memory_kib
from bench.lib.stats import median
from lbtrain.kube import JOBS, MODELRUNS, KubeClient
from lbtrain_dev.fake_labelbox import FakeLabelbox

from .kubelet import kubelet_process

FULL = ["EXPORTING_DATA", "PREPARING_DATA", "TRAINING_MODEL", "COMPLETE"]
LATE_S = 5.0  # a run acknowledged later than this after its Job completed counts as late
EARLY_S = 20.0  # ... and as early when its Job completed this soon after the first one
CANARY = 99999


@dataclass
class OperatorRun:
    n: int
    create_s: float = float("nan")  # the benchmark's N ModelRun creates
    jobs_s: float = float("nan")  # first create -> last Job seen
    first_job_s: float = float("nan")
    jobs_window_s: float = float("nan")  # first Job seen -> last Job seen
    job_latency: list[float] = field(default_factory=list)  # run create sent -> its Job seen
    pods_s: float = float("nan")  # go -> last pod seen by the kubelet (controller manager)
    drive_s: float = float("nan")  # go -> last pod succeeded
    complete_s: float = float("nan")  # first create -> last Labelbox COMPLETE acknowledged
    after_go_s: float = float("nan")  # go -> last COMPLETE acknowledged
    jobs_complete_s: float = float("nan")  # go -> last Job Complete
    lag: list[float] = field(default_factory=list)  # Job Complete -> COMPLETE acknowledged
    lb_lag: list[float] = field(default_factory=list)  # Job Complete -> Labelbox got COMPLETE
    late_early: int = 0  # acked > LATE_S after its Job Complete, in the first EARLY_S
    late_later: int = 0  # ... the same, Job Complete later than that
    full_timelines: int = 0
    status_updates: int = 0
    bad_samples: list[str] = field(default_factory=list)
    rss_idle_mib: float = float("nan")
    rss_jobs_mib: float = float("nan")
    rss_end_mib: float = float("nan")
    peak_rss_mib: float = float("nan")
    cpu_startup: float = float("nan")
    cpu_jobs: float = float("nan")
    cpu_total: float = float("nan")
    cpu_apiserver_etcd: float = float("nan")
    cpu_kcm: float = float("nan")
    requests: dict[str, float] = field(default_factory=dict)  # API requests per run, all clients
    requests_jobs: dict[str, float] = field(default_factory=dict)  # the same, until every Job
    cpu_api_jobs: float = float("nan")  # apiserver + etcd CPU until every Job exists
    cpu_bench_jobs: float = float("nan")  # this process (creates, watches, fake Labelbox)
    retries: int = 0  # "reconcile failed; retrying" lines in the operator's log
    acked: int = 0  # runs whose status shows acknowledged COMPLETE
    stale_status: int = 0  # Labelbox has COMPLETE, the ModelRun's status never said so
    kubelet_errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Every Job phase of this N, each with the ceiling measured just before it: (ceiling
    # Jobs/s, pairs runs/s, operator Jobs/s). The last is this run's.
    paired: list[tuple[float, float, float]] = field(default_factory=list)

    def done_s(self, value: float) -> str:
        if self.acked < self.n:
            return f"not reached ({self.acked}/{self.n})"
        return f"{value:.1f}"

    def rate(self) -> float:
        return self.n / self.jobs_s

    def paired_rate(self) -> float:
        """The operator's Jobs/s: the median over its Job phases."""
        return median([op for _, _, op in self.paired])

    def ratio_to_ceiling(self) -> float:
        """Median over the Job phases of each one's Jobs/s over the ceiling measured just
        before it: this machine's speed drifts by more than the effect being measured within
        minutes, so a ratio is only taken between neighbours."""
        return median([op / ceil for ceil, _, op in self.paired])

    def ratio_to_pairs(self) -> float:
        return median([op / pairs for _, pairs, op in self.paired])


@dataclass
class Stamps:
    """What the bench's watches saw, each stamped on arrival (monotonic seconds), by run name."""

    created: dict[str, float] = field(default_factory=dict)  # its create was sent
    jobs: dict[str, float] = field(default_factory=dict)  # its Job seen
    jobs_done: dict[str, float] = field(default_factory=dict)  # its Job Complete
    acks: dict[str, dict[str, float]] = field(default_factory=dict)  # status -> run -> seen

    def on_job(self, job: dict[str, Any]) -> None:
        run = job["metadata"].get("labels", {}).get("lbtrain.io/model-run", "")
        now = time.monotonic()
        self.jobs.setdefault(run, now)
        for cond in (job.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Complete" and cond.get("status") == "True":
                self.jobs_done.setdefault(run, now)

    def on_run(self, mr: dict[str, Any]) -> None:
        ack = ((mr.get("status") or {}).get("labelbox") or {}).get("acknowledged")
        if ack:
            self.acks.setdefault(ack, {}).setdefault(mr["metadata"]["name"], time.monotonic())

    @property
    def complete(self) -> dict[str, float]:
        return self.acks.setdefault("COMPLETE", {})


def late_counts(complete: dict[str, float], jobs_done: dict[str, float]) -> tuple[int, int]:
    """Runs acknowledged more than LATE_S after their Job's Complete: (those whose Job
    completed in the first EARLY_S after the first Job Complete, the others)."""
    first_done = min(jobs_done.values(), default=0.0)
    early = later = 0
    for name, done in jobs_done.items():
        if name in complete and complete[name] - done > LATE_S:
            if done - first_done < EARLY_S:
                early += 1
            else:
                later += 1
    return early, later


@dataclass(frozen=True)
class Setup:
    """What every phase of one bench run shares: the API client, the testbed's kubeconfig (its
    folder holds the operators' logs), the command line, the fake Labelbox, the pids whose CPU
    is measured."""

    kube: KubeClient
    kubeconfig: Path
    args: argparse.Namespace
    fake: FakeLabelbox
    pids: dict[str, int]

    @property
    def work(self) -> Path:
        return self.kubeconfig.parent


class Phase:
    """One phase's namespace, operator, watches and (unless `jobs_only`) fake kubelet."""

    def __init__(self, setup: Setup, n: int, *, jobs_only: bool) -> None:
        self.kube, self.kubeconfig, self.n, self.args = setup.kube, setup.kubeconfig, n, setup.args
        self.fake, self.pids, self.jobs_only = setup.fake, setup.pids, jobs_only
        args, kubeconfig, work = setup.args, setup.kubeconfig, setup.work
        self.ns = f"op-{n}-{secrets.token_hex(3)}"
        self.res = OperatorRun(n)
        self.seen = Stamps()
        self.run_ids = [run_id(self.ns, i) for i in range(n)]
        self.canary_id = run_id(self.ns, CANARY)
        ctx = multiprocessing.get_context("spawn")
        self.go = ctx.Event()
        self.results: Queue[dict[str, Any]] = ctx.Queue()
        self.driver = None
        if not jobs_only:
            self.driver = ctx.Process(
                target=kubelet_process,
                args=(str(kubeconfig), self.ns, n, args.kubelet_concurrency, self.go, self.results),
                daemon=True,
            )
        self.profile = work / f"operator-{n}.prof" if args.profile else None
        self.op = Operator(
            kubeconfig,
            self.ns,
            self.fake,
            work / f"operator-{n}.log",
            self.profile,
            args.operator_source,
        )
        self.peak_sampled = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await create_namespace(self.kube, self.ns)
        await prepare_namespace(self.kube, self.ns)
        for rid in [*self.run_ids, self.canary_id]:
            self.fake.add_model_run(rid)
        if self.driver is not None:
            self.driver.start()
        self.tasks = [
            asyncio.create_task(Follower(self.kube, JOBS, self.ns, self.seen.on_job).run()),
            asyncio.create_task(Follower(self.kube, MODELRUNS, self.ns, self.seen.on_run).run()),
        ]
        self.op.start()
        self.tasks.append(asyncio.create_task(self._sample()))

    async def _sample(self) -> None:
        while True:
            self.peak_sampled = max(self.peak_sampled, memory_kib(self.op.pid).get("VmRSS", 0))
            await asyncio.sleep(0.25)

    def rss_mib(self, key: str = "VmRSS") -> float:
        return memory_kib(self.op.pid).get(key, 0) / 1024

    async def ready(self) -> None:
        """The canary (no template for its type) reported FAILED through the real SDK."""
        canary = run_body(CANARY, self.canary_id, "ner")
        await self.kube.create(MODELRUNS, canary, self.ns)
        failed = self.seen.acks
        if not await until(lambda: run_name(CANARY) in failed.get("FAILED", {}), 120):
            raise RuntimeError("the operator did not report the canary run\n" + self.op.tail())
        await asyncio.sleep(1.0)

    async def stop(self) -> None:
        res = self.res
        self.go.set()
        self.op.stop()
        if self.driver is not None:
            try:
                drove = await asyncio.to_thread(self.results.get, True, 30)
                if drove["done"]:
                    res.drive_s = max(drove["done"].values()) - drove["started"]
                if drove["seen"]:
                    res.pods_s = max(drove["seen"].values()) - drove["started"]
                res.kubelet_errors = list(drove["errors"])
            except Exception:  # the kubelet did not finish: its figures stay unknown
                res.problems.append("the fake kubelet did not finish")
            self.driver.join(5)
            if self.driver.is_alive():
                self.driver.kill()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        res.retries = self.op.tail(10**9).count("reconcile failed; retrying")
        if res.problems:
            print("  operator log (tail):\n" + self.op.tail(), flush=True)
        await delete_namespace(self.kube, self.ns)


async def create_runs(phase: Phase) -> None:
    """The N ModelRuns at `--concurrency`, then wait for every Job; fills the Job figures."""
    res, seen, n, kube = phase.res, phase.seen, phase.n, phase.kube
    t0 = time.monotonic()

    async def make(i: int) -> None:
        body = run_body(i, phase.run_ids[i])
        seen.created[body["metadata"]["name"]] = time.monotonic()
        await with_retry(lambda: kube.create(MODELRUNS, body, phase.ns))

    await bounded(phase.args.concurrency, n, make)
    res.create_s = time.monotonic() - t0
    print(f"  {n} ModelRuns created in {res.create_s:.1f}s", flush=True)
    names = set(seen.created)
    timeout = phase.args.timeout_scale * max(120.0, n * 0.6)
    if not await until(lambda: names <= seen.jobs.keys(), timeout):
        res.problems.append(f"only {len(names & seen.jobs.keys())}/{n} Jobs after {timeout:.0f}s")
    stamps = [seen.jobs[r] for r in names if r in seen.jobs]
    res.jobs_s = max(stamps, default=float("nan")) - t0
    res.first_job_s = min(stamps, default=float("nan")) - t0
    res.jobs_window_s = max(stamps, default=0.0) - min(stamps, default=0.0)
    res.job_latency = [seen.jobs[r] - seen.created[r] for r in names if r in seen.jobs]


async def drive_to_complete(phase: Phase, t0: float) -> None:
    """Let the fake kubelet go; wait until every run is acknowledged COMPLETE (or nothing
    moved for `--stall` seconds); fills the completion figures."""
    res, seen, n, args = phase.res, phase.seen, phase.n, phase.args
    names = set(seen.created)
    t_go = time.monotonic()
    phase.go.set()
    complete = seen.complete

    def stalled() -> bool:
        """Every Job is Complete and no run was acknowledged for `--stall` seconds."""
        if not names <= seen.jobs_done.keys():
            return False
        last = max([*complete.values(), *seen.jobs_done.values()])
        return time.monotonic() - last > float(args.stall)

    timeout = args.timeout_scale * max(240.0, n * 1.5)
    if not await until(lambda: names <= complete.keys() or stalled(), timeout, interval=0.2):
        res.problems.append(f"gave up after {timeout:.0f}s")
    res.acked = len(names & complete.keys())
    if res.acked < n:
        res.problems.append(
            f"only {res.acked}/{n} runs show `acknowledged: COMPLETE` in their status "
            f"({len(seen.jobs_done)} Jobs Complete; waited until nothing moved for "
            f"{args.stall:.0f}s)"
        )
    done_stamps = [complete[r] for r in names if r in complete]
    res.complete_s = max(done_stamps, default=float("nan")) - t0
    res.after_go_s = max(done_stamps, default=float("nan")) - t_go
    res.jobs_complete_s = max(seen.jobs_done.values(), default=float("nan")) - t_go
    res.lag = [
        complete[r] - seen.jobs_done[r] for r in names if r in complete and r in seen.jobs_done
    ]
    res.late_early, res.late_later = late_counts(complete, seen.jobs_done)


def check_labelbox(phase: Phase) -> None:
    """What the fake Labelbox received: each run's timeline, and when COMPLETE arrived
    (wall-clock stamps, turned into lags from the Job's Complete)."""
    res, seen = phase.res, phase.seen
    to_wall = time.time() - time.monotonic()
    for i, rid in enumerate(phase.run_ids):
        name = run_name(i)
        arrived = [u.at for u in phase.fake.status_updates(rid) if u.status == "COMPLETE"]
        if name in seen.jobs_done and arrived:
            res.lb_lag.append(arrived[0] - (seen.jobs_done[name] + to_wall))
        got = phase.fake.statuses(rid)
        if got and got[-1] == "COMPLETE" and name not in seen.complete:
            res.stale_status += 1
        res.status_updates += len(got)
        if got == FULL:
            res.full_timelines += 1
        elif len(res.bad_samples) < 5:
            res.bad_samples.append(f"{rid}: {got}")


async def operator_phase(setup: Setup, n: int, *, jobs_only: bool) -> OperatorRun:
    """One operator phase in a fresh namespace with a fresh operator; `jobs_only` stops once
    every Job exists (no fake kubelet, no COMPLETE)."""
    phase = Phase(setup, n, jobs_only=jobs_only)
    kube, pids = setup.kube, setup.pids
    res, op = phase.res, phase.op
    await phase.start()
    try:
        await phase.ready()
        res.rss_idle_mib = phase.rss_mib()
        res.cpu_startup = cpu_seconds(op.pid)
        cpu0, cpu_bench0 = cpu_of(pids), cpu_seconds(os.getpid())
        requests0 = await request_counts(kube)
        t0 = time.monotonic()
        await create_runs(phase)
        res.rss_jobs_mib = phase.rss_mib()
        res.cpu_jobs = cpu_seconds(op.pid) - res.cpu_startup
        res.cpu_api_jobs = sum(cpu_seconds(pids[k]) - cpu0[k] for k in ("kube-apiserver", "etcd"))
        res.cpu_bench_jobs = cpu_seconds(os.getpid()) - cpu_bench0
        res.requests_jobs = per_run(requests0, await request_counts(kube), n)
        print(
            f"  every Job exists {res.jobs_s:.1f}s after the first create "
            f"({res.rate():.1f} Jobs/s); operator RSS {res.rss_jobs_mib:.0f} MiB",
            flush=True,
        )
        if jobs_only:
            await asyncio.sleep(2.0)
        else:
            await drive_to_complete(phase, t0)
            cpu = {k: v - cpu0[k] for k, v in cpu_of(pids).items()}
            res.cpu_apiserver_etcd = cpu["kube-apiserver"] + cpu["etcd"]
            res.cpu_kcm = cpu["kube-controller-manager"]
        res.requests = per_run(requests0, await request_counts(kube), n)
        if not jobs_only:
            await asyncio.sleep(1.0)  # anything sent after COMPLETE would show as a bad timeline
            res.rss_end_mib = phase.rss_mib()
        res.peak_rss_mib = max(phase.rss_mib("VmHWM"), phase.peak_sampled / 1024)
        res.cpu_total = cpu_seconds(op.pid)
        if not jobs_only:
            check_labelbox(phase)
            print(
                f"  every run COMPLETE in Labelbox {res.complete_s:.1f}s after the first create; "
                f"full timelines {res.full_timelines}/{n}; peak RSS {res.peak_rss_mib:.0f} MiB; "
                f"operator CPU {res.cpu_total:.1f}s",
                flush=True,
            )
    finally:
        await phase.stop()
        if phase.profile is not None:
            from .report import show_profile

            show_profile(phase.profile)
    return res
