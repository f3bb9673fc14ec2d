"""Benchmark of `lbtrain operator`: N ModelRuns at once, against the API server's own Job ceiling.

    .venv/bin/python bench/operator_bench.py [--sizes 100,500,1000] [--concurrency 32]
                                             [--kubelet-concurrency 16] [--profile] [--no-write]

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
prints where its event-loop thread spends CPU (README untouched).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import pstats
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from lbtrain.kube import (
    JOBS,
    MODELRUNS,
    NAMESPACES,
    PODS,
    SECRETS,
    SERVICEACCOUNTS,
    TRAININGTEMPLATES,
    ApiError,
    ApiUnreachable,
    KubeClient,
    NotFound,
    Resource,
    load_config,
)
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid

REPO = Path(__file__).resolve().parents[1]
API_KEY = "bench-key-not-a-secret"
MODEL_TYPE = "image_single_classification"
FULL = ["EXPORTING_DATA", "PREPARING_DATA", "TRAINING_MODEL", "COMPLETE"]
GOAL_RATIO = 0.5
LATE_S = 5.0  # a run acknowledged later than this after its Job completed counts as late
EARLY_S = 20.0  # ... and as early when its Job completed this soon after the first one
GOAL_RSS_MIB = 300.0
TEMPLATE = {
    "metadata": {"name": "bench-template"},
    "spec": {"modelType": MODEL_TYPE, "image": "ghcr.io/lbtrain/trainer:bench", "gpus": 1},
}
START = "<!-- operator_bench.py: begin -->"
END = "<!-- operator_bench.py: end -->"


# --- /proc ---------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a live process, in KiB."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


CODE_UNDER_TEST = ("operator", "lbtrain", "webhook")


def operator_version() -> str:
    """The last commit that touched the code under test (the operator, the shared library and
    the webhook, which builds the ModelRuns), and whether the tree differs from it."""
    try:
        commit = subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", *CODE_UNDER_TEST],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *CODE_UNDER_TEST],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"`nproc` = {len(os.sched_getaffinity(0))}, {cpu}, {mem_gib:.0f} GiB, "
        f"Python {platform.python_version()}"
    )


# --- small async helpers -------------------------------------------------------------------------
async def with_retry(call: Callable[[], Awaitable[Any]], attempts: int = 5) -> Any:
    """The benchmark's own requests ride out a busy API server (timeouts, 429, 5xx)."""
    for attempt in range(attempts):
        try:
            return await call()
        except ApiUnreachable:
            if attempt == attempts - 1:
                raise
        except ApiError as exc:
            if (exc.status != 429 and exc.status < 500) or attempt == attempts - 1:
                raise
        await asyncio.sleep(0.2 * (attempt + 1))
    return None


async def bounded(
    concurrency: int, count: int, one: Callable[[int], Awaitable[Any]]
) -> list[float]:
    """Run `one(0..count-1)` with `concurrency` in flight; answer each call's latency."""
    latencies: list[float] = []
    todo = iter(range(count))

    async def worker() -> None:
        for i in todo:
            started = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))
    return latencies


async def until(done: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Follower:
    """List, then watch, one resource in one namespace; `seen(obj)` for every version of every
    object, stamped on arrival by the caller."""

    def __init__(
        self, kube: KubeClient, res: Resource, ns: str, seen: Callable[[dict[str, Any]], None]
    ) -> None:
        self.kube, self.res, self.ns, self.seen = kube, res, ns, seen

    async def run(self) -> None:
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    listing = await self.kube.list(self.res, self.ns)
                    for item in listing.get("items", []):
                        self.seen(item)
                    rv = str(listing["metadata"]["resourceVersion"])
                async for event in self.kube.watch(
                    self.res, self.ns, resource_version=rv, timeout_seconds=240
                ):
                    rv = str(event.object.get("metadata", {}).get("resourceVersion") or rv)
                    if event.type in ("ADDED", "MODIFIED"):
                        self.seen(event.object)
            except ApiError as exc:
                if exc.status != 410:
                    raise
                rv = None
            except ApiUnreachable:
                await asyncio.sleep(0.5)


async def create_namespace(kube: KubeClient, name: str) -> None:
    await kube.create(NAMESPACES, {"metadata": {"name": name, "labels": {"lbtrain.io/bench": "1"}}})
    await kube.wait_for(SERVICEACCOUNTS, "default", name, lambda _: True, timeout=60)


async def delete_namespace(kube: KubeClient, name: str, timeout: float = 600) -> float:
    """Delete a namespace and wait until it is gone; the finalizers on its pods (the Job
    controller's tracking finalizer, removed at the controller manager's 20 QPS) and ModelRuns
    (the operator's, which is stopped by then) are stripped here so it goes quickly."""
    started = time.monotonic()
    with contextlib.suppress(NotFound):
        await kube.delete(NAMESPACES, name)

    async def strip(res: Resource) -> None:
        with contextlib.suppress(ApiError, ApiUnreachable):
            items = (await kube.list(res, name))["items"]
            stuck = [i["metadata"]["name"] for i in items if i["metadata"].get("finalizers")]

            async def one(i: int) -> None:
                with contextlib.suppress(ApiError, ApiUnreachable):
                    await kube.patch(res, stuck[i], {"metadata": {"finalizers": None}}, name)

            await bounded(32, len(stuck), one)

    while time.monotonic() - started < timeout:
        try:
            await kube.get(NAMESPACES, name)
        except NotFound:
            return time.monotonic() - started
        for res in (PODS, MODELRUNS):
            await strip(res)
        await asyncio.sleep(1.0)
    print(f"  warning: namespace {name} still there after {timeout:.0f}s", flush=True)
    return time.monotonic() - started


_REQUEST_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)


async def request_counts(kube: KubeClient) -> dict[str, float]:
    """kube-apiserver's own request counters, keyed "VERB resource[/subresource]"."""
    import aiohttp

    config = kube.config
    headers = {"Authorization": f"Bearer {config.bearer_token()}"}
    connector = aiohttp.TCPConnector(ssl=config.ssl_context())
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(config.server + "/metrics", headers=headers) as resp,
    ):
        text = await resp.text()
    counts: dict[str, float] = {}
    for m in _REQUEST_LINE.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        key = f"{labels.get('verb')} {labels.get('resource')}"
        if labels.get("subresource"):
            key += f"/{labels['subresource']}"
        counts[key] = counts.get(key, 0.0) + float(m.group("value"))
    return counts


def per_run(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """Request counts per run between two snapshots, leaving out the rare ones."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    return {k: v / n for k, v in delta.items() if v >= n / 10}


def run_body(
    i: int, run_id: str, model_type: str = MODEL_TYPE, *, for_operator: bool = True
) -> dict[str, Any]:
    """A ModelRun as the webhook builds it for a Labelbox request, under a short name. Without
    `for_operator` it has no finalizer: no operator watches the references' namespaces, and
    deleting them must not wait for one."""
    from lbtrain_webhook.modelruns import build_model_run
    from lbtrain_webhook.payload import ModelRunRequest

    body = build_model_run(ModelRunRequest(run_id, model_type, fake_cuid("bench-model")))
    body["metadata"]["name"] = f"run-{i:05d}"
    if not for_operator:
        del body["metadata"]["finalizers"]
    return body


# --- the ceiling: a plain client creating the operator's Jobs ------------------------------------
@dataclass
class Ceiling:
    seconds: float
    latencies: list[float]
    cpu_apiserver_etcd: float
    cpu_kcm: float
    cleanup_s: float = 0.0
    pair_seconds: float = float("nan")
    rates: list[float] = field(default_factory=list)  # every repeat's Jobs/s
    pair_rates: list[float] = field(default_factory=list)  # every repeat's pairs/s

    def rate(self, n: int) -> float:
        return n / self.seconds

    def pair_rate(self, n: int) -> float:
        return n / self.pair_seconds


def median_ceiling(n: int, repeats: list[Ceiling]) -> Ceiling:
    """One figure from repeated measurements: a single ceiling of a few seconds moved by ±25%
    between runs on this shared machine. The median repeat's detail (latencies, CPU) is kept;
    the pairs' median is taken on its own."""
    by_time = sorted(repeats, key=lambda c: c.seconds)
    pairs = sorted(c.pair_seconds for c in repeats)
    return replace(
        by_time[len(by_time) // 2],
        pair_seconds=pairs[len(pairs) // 2],
        cleanup_s=sum(c.cleanup_s for c in repeats),
        rates=[c.rate(n) for c in repeats],
        pair_rates=[c.pair_rate(n) for c in repeats],
    )


async def ceiling(
    kube: KubeClient,
    n: int,
    concurrency: int,
    fake: FakeLabelbox,
    pids: dict[str, int],
) -> Ceiling:
    from lbtrain.resources.models import ModelRun, TrainingTemplate
    from lbtrain_operator import jobspec
    from lbtrain_operator.settings import Settings

    ns = f"ceil-{n}-{secrets.token_hex(3)}"
    await create_namespace(kube, ns)
    tt = await kube.create(TRAININGTEMPLATES, TEMPLATE, ns)
    template = TrainingTemplate.model_validate(tt)
    settings = Settings(labelbox_endpoint=fake.endpoint, labelbox_rest_endpoint=fake.rest_endpoint)
    owners: list[dict[str, Any]] = [{}] * n

    async def make_owner(i: int) -> None:
        body = run_body(i, f"ceil-{n}-{i}", for_operator=False)
        owners[i] = await with_retry(lambda: kube.create(MODELRUNS, body, ns))

    await bounded(concurrency, n, make_owner)  # untimed: the Jobs' owners
    jobs = []
    for mr in owners:
        job = jobspec.build_job(
            ModelRun.model_validate(mr), mr["metadata"]["uid"], template, settings
        )
        jobs.append(job)
    await asyncio.sleep(2.0)  # let the API server settle after the owners' creates
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    started = time.perf_counter()
    latencies = await bounded(
        concurrency, n, lambda i: with_retry(lambda: kube.create(JOBS, jobs[i], ns))
    )
    seconds = time.perf_counter() - started
    cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
    result = Ceiling(
        seconds, latencies, cpu["kube-apiserver"] + cpu["etcd"], cpu["kube-controller-manager"]
    )
    result.cleanup_s = await delete_namespace(kube, ns)

    # The floor of this design: each run's ModelRun create, then its Job's, by a plain client
    # with no operator, no watches, no status writes. No operator of ModelRuns can beat it.
    ns = f"pair-{n}-{secrets.token_hex(3)}"
    await create_namespace(kube, ns)
    await asyncio.sleep(2.0)

    async def make_pair(i: int) -> None:
        body = run_body(i, f"pair-{n}-{i}", for_operator=False)
        mr = await with_retry(lambda: kube.create(MODELRUNS, body, ns))
        job = jobspec.build_job(
            ModelRun.model_validate(mr), mr["metadata"]["uid"], template, settings
        )
        await with_retry(lambda: kube.create(JOBS, job, ns))

    started = time.perf_counter()
    await bounded(concurrency, n, make_pair)
    result.pair_seconds = time.perf_counter() - started
    result.cleanup_s += await delete_namespace(kube, ns)
    return result


# --- the fake kubelet, in its own process --------------------------------------------------------
def kubelet_process(
    kubeconfig: str, ns: str, n: int, concurrency: int, go: Event, out: Queue[dict[str, Any]]
) -> None:
    """Play scheduler and kubelet for the namespace's pods once `go` is set: every pod is bound,
    runs export, prepare and train, and succeeds. Answers first-seen and done times per pod."""
    out.put(asyncio.run(_drive(kubeconfig, ns, n, concurrency, go)))


async def _drive(kubeconfig: str, ns: str, n: int, concurrency: int, go: Event) -> dict[str, Any]:
    from lbtrain_dev.testbed.fake_kubelet import FakeKubelet

    seen: dict[str, float] = {}
    done: dict[str, float] = {}
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    errors: list[str] = []

    def on_pod(pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        if name not in seen and (pod.get("status") or {}).get("phase", "Pending") == "Pending":
            seen[name] = time.monotonic()
            queue.put_nowait(pod)

    async with KubeClient(load_config(kubeconfig), request_timeout=60) as kube:
        kubelet = FakeKubelet(kube, ns)
        watcher = asyncio.create_task(Follower(kube, PODS, ns, on_pod).run())
        await asyncio.to_thread(go.wait)
        started = time.monotonic()

        async def run_pod(pod: dict[str, Any]) -> None:
            steps: list[Callable[[], Awaitable[Any]]] = [
                lambda: kubelet.schedule(pod),
                lambda: kubelet.run_stage(pod, "export"),
                lambda: kubelet.run_stage(pod, "prepare"),
                lambda: kubelet.run_stage(pod, "train"),
                lambda: kubelet.succeed(pod, message=json.dumps({"accuracy": 0.9})),
            ]
            for step in steps:
                await with_retry(step)

        async def worker() -> None:
            while len(done) < n:
                try:
                    pod = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    continue
                try:
                    await run_pod(pod)
                except (ApiError, ApiUnreachable) as exc:
                    errors.append(f"{pod['metadata']['name']}: {exc}")
                done[pod["metadata"]["name"]] = time.monotonic()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, ApiError, ApiUnreachable):
            await watcher
    return {"seen": seen, "done": done, "started": started, "errors": errors[:20]}


# --- the operator --------------------------------------------------------------------------------
class Operator:
    def __init__(
        self, kubeconfig: Path, ns: str, fake: FakeLabelbox, log: Path, profile: Path | None
    ):
        prefix = ["-m", "cProfile", "-o", str(profile)] if profile else []
        self.args = [
            sys.executable,
            *prefix,
            "-m",
            "lbtrain",
            "operator",
            f"--kubeconfig={kubeconfig}",
            f"--namespace={ns}",
            f"--labelbox-endpoint={fake.endpoint}",
            f"--labelbox-rest-endpoint={fake.rest_endpoint}",
            "--metrics-port=0",
            "--liveness-port=0",
        ]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        env = {
            **os.environ,
            "LABELBOX_API_KEY": API_KEY,
            "NO_PROXY": "127.0.0.1,localhost",
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO
            )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


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

    def done_s(self, value: float) -> str:
        if self.acked < self.n:
            return f"not reached ({self.acked}/{self.n})"
        return f"{value:.1f}"

    kubelet_errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    # Every Job phase of this N, each with the ceiling measured just before it: (ceiling
    # Jobs/s, pairs runs/s, operator Jobs/s). The last is this run's.
    paired: list[tuple[float, float, float]] = field(default_factory=list)

    def rate(self) -> float:
        return self.n / self.jobs_s

    def paired_rate(self) -> float:
        """The operator's Jobs/s: the median over its Job phases."""
        return quantile([op for _, _, op in self.paired], 0.5)

    def ratio_to_ceiling(self) -> float:
        """Median over the Job phases of each one's Jobs/s over the ceiling measured just
        before it: this machine's speed drifts by more than the effect being measured within
        minutes, so a ratio is only taken between neighbours."""
        return quantile([op / ceil for ceil, _, op in self.paired], 0.5)

    def ratio_to_pairs(self) -> float:
        return quantile([op / pairs for _, pairs, op in self.paired], 0.5)


async def operator_phase(
    kube: KubeClient,
    kubeconfig: Path,
    n: int,
    args: argparse.Namespace,
    fake: FakeLabelbox,
    pids: dict[str, int],
    work: Path,
    *,
    jobs_only: bool,
) -> OperatorRun:
    """One operator phase in a fresh namespace with a fresh operator; `jobs_only` stops once
    every Job exists (no fake kubelet, no COMPLETE)."""
    res = OperatorRun(n)
    ns = f"op-{n}-{secrets.token_hex(3)}"
    await create_namespace(kube, ns)
    await kube.create(
        SECRETS, {"metadata": {"name": "lbtrain-labelbox"}, "stringData": {"api-key": API_KEY}}, ns
    )
    await kube.create(TRAININGTEMPLATES, TEMPLATE, ns)
    run_ids = [fake_cuid(f"{ns}-{i}") for i in range(n)]
    for run_id in run_ids:
        fake.add_model_run(run_id)
    fake.add_model_run(fake_cuid(f"{ns}-canary"))

    created: dict[str, float] = {}  # run name -> its create was sent
    jobs: dict[str, float] = {}  # run name -> its Job seen
    jobs_done: dict[str, float] = {}
    acks: dict[str, dict[str, float]] = {}

    def on_job(job: dict[str, Any]) -> None:
        run = job["metadata"].get("labels", {}).get("lbtrain.io/model-run", "")
        now = time.monotonic()
        jobs.setdefault(run, now)
        for cond in (job.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Complete" and cond.get("status") == "True":
                jobs_done.setdefault(run, now)

    def on_run(mr: dict[str, Any]) -> None:
        ack = ((mr.get("status") or {}).get("labelbox") or {}).get("acknowledged")
        if ack:
            acks.setdefault(ack, {}).setdefault(mr["metadata"]["name"], time.monotonic())

    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    results: Queue[dict[str, Any]] = ctx.Queue()
    driver = None
    if not jobs_only:
        driver = ctx.Process(
            target=kubelet_process,
            args=(str(kubeconfig), ns, n, args.kubelet_concurrency, go, results),
            daemon=True,
        )
        driver.start()
    followers = [
        asyncio.create_task(Follower(kube, JOBS, ns, on_job).run()),
        asyncio.create_task(Follower(kube, MODELRUNS, ns, on_run).run()),
    ]
    profile = work / f"operator-{n}.prof" if args.profile else None
    op = Operator(kubeconfig, ns, fake, work / f"operator-{n}.log", profile)
    peak_sampled = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak_sampled
        while sampling:
            peak_sampled = max(peak_sampled, memory_kib(op.pid).get("VmRSS", 0))
            await asyncio.sleep(0.25)

    op.start()
    sampler = asyncio.create_task(sample())
    timeout_jobs = args.timeout_scale * max(120.0, n * 0.6)
    timeout_done = args.timeout_scale * max(240.0, n * 1.5)
    try:
        # Ready: the canary (no template for its type) reported FAILED through the real SDK.
        await kube.create(MODELRUNS, run_body(99999, fake_cuid(f"{ns}-canary"), "ner"), ns)
        if not await until(lambda: "run-99999" in acks.get("FAILED", {}), 120):
            raise RuntimeError("the operator did not report the canary run\n" + op.tail())
        await asyncio.sleep(1.0)
        res.rss_idle_mib = memory_kib(op.pid).get("VmRSS", 0) / 1024
        res.cpu_startup = cpu_seconds(op.pid)
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        cpu_bench0 = cpu_seconds(os.getpid())
        requests0 = await request_counts(kube)

        t0 = time.monotonic()

        async def make(i: int) -> None:
            body = run_body(i, run_ids[i])
            created[body["metadata"]["name"]] = time.monotonic()
            await with_retry(lambda: kube.create(MODELRUNS, body, ns))

        await bounded(args.concurrency, n, make)
        res.create_s = time.monotonic() - t0
        print(f"  {n} ModelRuns created in {res.create_s:.1f}s", flush=True)

        names = set(created)
        if not await until(lambda: names <= jobs.keys(), timeout_jobs):
            res.problems.append(
                f"only {len(names & jobs.keys())}/{n} Jobs after {timeout_jobs:.0f}s"
            )
        stamps = [jobs[r] for r in names if r in jobs]
        res.jobs_s = max(stamps) - t0
        res.first_job_s = min(stamps) - t0
        res.jobs_window_s = max(stamps) - min(stamps)
        res.job_latency = [jobs[r] - created[r] for r in names if r in jobs]
        res.rss_jobs_mib = memory_kib(op.pid).get("VmRSS", 0) / 1024
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
            res.peak_rss_mib = memory_kib(op.pid).get("VmHWM", 0) / 1024
            res.cpu_total = cpu_seconds(op.pid)
            res.requests = per_run(requests0, await request_counts(kube), n)
            return res
        t_go = time.monotonic()
        go.set()
        complete = acks.setdefault("COMPLETE", {})

        def stalled() -> bool:
            """Every Job is Complete and no run was acknowledged for `--stall` seconds."""
            if not names <= jobs_done.keys():
                return False
            last = max([*complete.values(), *jobs_done.values()])
            return time.monotonic() - last > float(args.stall)

        if not await until(
            lambda: names <= complete.keys() or stalled(), timeout_done, interval=0.2
        ):
            res.problems.append(f"gave up after {timeout_done:.0f}s")
        res.acked = len(names & complete.keys())
        if res.acked < n:
            res.problems.append(
                f"only {res.acked}/{n} runs show `acknowledged: COMPLETE` in their status "
                f"({len(jobs_done)} Jobs Complete; waited until nothing moved for "
                f"{args.stall:.0f}s)"
            )
        done_stamps = [complete[r] for r in names if r in complete]
        res.complete_s = max(done_stamps) - t0 if done_stamps else float("nan")
        res.after_go_s = max(done_stamps) - t_go if done_stamps else float("nan")
        res.jobs_complete_s = max(jobs_done.values()) - t_go if jobs_done else float("nan")
        res.lag = [complete[r] - jobs_done[r] for r in names if r in complete and r in jobs_done]
        # Where a lag arises: the fake Labelbox stamps each arrival in wall-clock time.
        to_wall = time.time() - time.monotonic()
        first_done = min(jobs_done.values(), default=0.0)
        for i, run_id in enumerate(run_ids):
            name = f"run-{i:05d}"
            arrived = [u.at for u in fake.status_updates(run_id) if u.status == "COMPLETE"]
            if name in jobs_done and arrived:
                res.lb_lag.append(arrived[0] - (jobs_done[name] + to_wall))
            both = name in complete and name in jobs_done
            late = both and complete[name] - jobs_done[name] > LATE_S
            if late and jobs_done[name] - first_done < EARLY_S:
                res.late_early += 1
            elif late:
                res.late_later += 1
        cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
        res.cpu_apiserver_etcd = cpu["kube-apiserver"] + cpu["etcd"]
        res.cpu_kcm = cpu["kube-controller-manager"]
        res.requests = per_run(requests0, await request_counts(kube), n)
        await asyncio.sleep(1.0)  # anything sent after COMPLETE would show as a bad timeline
        mem = memory_kib(op.pid)
        res.rss_end_mib = mem.get("VmRSS", 0) / 1024
        res.peak_rss_mib = max(mem.get("VmHWM", 0), peak_sampled) / 1024
        res.cpu_total = cpu_seconds(op.pid)
        for i, run_id in enumerate(run_ids):
            got = fake.statuses(run_id)
            if (
                got
                and got[-1] == "COMPLETE"
                and run_body(i, run_id)["metadata"]["name"] not in complete
            ):
                res.stale_status += 1
            res.status_updates += len(got)
            if got == FULL:
                res.full_timelines += 1
            elif len(res.bad_samples) < 5:
                res.bad_samples.append(f"{run_id}: {got}")
        print(
            f"  every run COMPLETE in Labelbox {res.complete_s:.1f}s after the first create; "
            f"full timelines {res.full_timelines}/{n}; peak RSS {res.peak_rss_mib:.0f} MiB; "
            f"operator CPU {res.cpu_total:.1f}s",
            flush=True,
        )
    finally:
        sampling = False
        sampler.cancel()
        go.set()
        op.stop()
        if driver is not None:
            try:
                drove = await asyncio.to_thread(results.get, True, 30)
                if drove["done"]:
                    res.drive_s = max(drove["done"].values()) - drove["started"]
                if drove["seen"]:
                    res.pods_s = max(drove["seen"].values()) - drove["started"]
                res.kubelet_errors = list(drove["errors"])
            except Exception:  # the kubelet did not finish: its figures stay unknown
                res.problems.append("the fake kubelet did not finish")
            driver.join(5)
            if driver.is_alive():
                driver.kill()
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        res.retries = op.tail(10**9).count("reconcile failed; retrying")
        if res.problems:
            print("  operator log (tail):\n" + op.tail(), flush=True)
        if profile is not None:  # here, so that --jobs-only (which returns early) shows it too
            show_profile(profile)
        await delete_namespace(kube, ns)
    return res


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


# --- report --------------------------------------------------------------------------------------
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


def write_section(generated: str) -> None:
    """Replace the generated block of "## operator" in bench/README.md; other sections and any
    hand-written text of this section after the block are kept."""
    readme = REPO / "bench" / "README.md"
    current = readme.read_text() if readme.exists() else "# Benchmarks\n"
    block = f"{START}\n{generated.rstrip()}\n{END}"
    section_re = re.compile(r"^## operator\n.*?(?=^## |\Z)", re.S | re.M)
    found = section_re.search(current)
    if found and START in found.group(0) and END in found.group(0):
        old = found.group(0)
        new = old[: old.index(START)] + block + old[old.index(END) + len(END) :]
        updated = current[: found.start()] + new + current[found.end() :]
    elif found:
        updated = current[: found.start()] + f"## operator\n\n{block}\n\n" + current[found.end() :]
    else:
        updated = current.rstrip() + f"\n\n## operator\n\n{block}\n"
    readme.write_text(updated.rstrip() + "\n")


# --- main ----------------------------------------------------------------------------------------


async def measure(
    kube: KubeClient,
    kubeconfig: Path,
    n: int,
    args: argparse.Namespace,
    fake: FakeLabelbox,
    pids: dict[str, int],
) -> tuple[Ceiling, OperatorRun]:
    """One N: the ceiling and pairs `--ceiling-repeats` times; after each of the last
    `--job-phase-repeats` of them, one operator phase (all but the last stop once every Job
    exists). The machine's speed drifts within minutes, so each Job phase is compared with the
    ceiling measured just before it."""
    work = kubeconfig.parent
    print(f"N = {n}: ceiling", flush=True)
    repeats: list[Ceiling] = []
    paired: list[tuple[float, float, float]] = []
    problems: list[str] = []
    first_paired = args.ceiling_repeats - args.job_phase_repeats
    for k in range(args.ceiling_repeats):
        one = await ceiling(kube, n, args.concurrency, fake, pids)
        print(
            f"  {one.rate(n):.1f} Jobs/s ({one.seconds:.1f}s); "
            f"pairs {one.pair_rate(n):.1f}/s ({one.pair_seconds:.1f}s); "
            f"namespaces gone after {one.cleanup_s:.0f}s",
            flush=True,
        )
        repeats.append(one)
        if first_paired <= k < args.ceiling_repeats - 1:
            print(f"N = {n}: operator, Job phase only", flush=True)
            early = await operator_phase(
                kube, kubeconfig, n, args, fake, pids, work, jobs_only=True
            )
            paired.append((one.rate(n), one.pair_rate(n), early.rate()))
            problems += [f"Job phase {len(paired)}: {p}" for p in early.problems]
    print(f"N = {n}: operator", flush=True)
    op = await operator_phase(kube, kubeconfig, n, args, fake, pids, work, jobs_only=args.jobs_only)
    last = repeats[-1]
    op.paired = [*paired, (last.rate(n), last.pair_rate(n), op.rate())]
    op.problems = problems + op.problems
    return median_ceiling(n, repeats), op


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
        "--keep", type=Path, help="run the control plane in this folder and keep its logs"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.ceiling_repeats < 1:
        parser.error(f"--ceiling-repeats must be at least 1, not {args.ceiling_repeats}")
    if not 1 <= args.job_phase_repeats <= args.ceiling_repeats:
        parser.error(
            f"--job-phase-repeats must be between 1 and --ceiling-repeats "
            f"({args.ceiling_repeats}), not {args.job_phase_repeats}"
        )

    from lbtrain_dev.testbed import ControlPlane
    from lbtrain_dev.testbed.binaries import ensure_binaries

    bin_dir = ensure_binaries()
    load_before = os.getloadavg()
    rows: list[tuple[Ceiling, OperatorRun]] = []
    wall = time.monotonic()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    folder = (
        contextlib.nullcontext(str(args.keep))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="lbtrain-opbench-")
    )
    with folder as run_dir, FakeLabelbox.in_thread(api_key=API_KEY) as fake:
        plane = ControlPlane(bin_dir, Path(run_dir))
        plane.start(die_with_parent=True)
        try:
            plane.install_crds(REPO / "crds")
            pids = dict(plane.state.pids)

            async def run_all() -> None:
                config = load_config(str(plane.kubeconfig))
                async with KubeClient(config, request_timeout=60) as kube:
                    for n in sizes:
                        rows.append(await measure(kube, plane.kubeconfig, n, args, fake, pids))

            asyncio.run(run_all())
        finally:
            plane.stop()
    load_after = os.getloadavg()
    table = report(rows, args.concurrency, args.kubelet_concurrency)
    print()
    print(table)
    if args.profile or args.no_write or args.jobs_only:
        return 0
    intro = SECTION_INTRO.format(
        concurrency=args.concurrency,
        repeats=args.ceiling_repeats,
        job_repeats=args.job_phase_repeats,
    )
    generated = (
        f"{intro}"
        f"\nMachine: {machine()}. "
        "Load average (1/5/15 min) before: "
        f"{load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f}, after: "
        f"{load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f} (the machine is shared). "
        f"Whole run: {(time.monotonic() - wall) / 60:.0f} min; operator, library and webhook "
        f"code at {operator_version()}.\n\n{table}\n"
    )
    write_section(generated)
    print("\nwritten to bench/README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
