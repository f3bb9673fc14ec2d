"""What each request a ModelRun costs kube-apiserver + etcd, in CPU, against a Job's create.

    .venv/bin/python bench/apiserver_costs.py [--n 1000] [--concurrency 32]
    .venv/bin/python bench/apiserver_costs.py --smoke   # seconds: checks the bench still runs

Why: the operator benchmark (`operator_bench.py`) found the API server, not the operator, to be
the bottleneck of a burst, and the operator's design choices (one status write per transition,
Jobs first during a burst: `operator/lbtrain_operator/burst.py`) rest on what each kind of
request costs it. This script measures that on a testbed control plane, one kind at a time:

- `POST modelruns`: N ModelRuns as the webhook builds them (`build_model_run`);
- `PATCH modelruns/status`: the status the operator really writes for a new run (taken from a
  real `lbtrain operator` run on one ModelRun), sent to each of the N runs, then a second write
  that changes one field, as a later transition would;
- `POST events`: the operator's JobCreated Event (`events.event_body`);
- `GET modelruns`;
- `POST jobs`: N Jobs of the operator's shape (`jobspec.build_job`), last, because the
  controller manager then creates pods in the background for a minute.

CPU is kube-apiserver's + etcd's from /proc over each step. It prints milliseconds of CPU per
request and the ratio to a Job's create, measured in the same run (absolute figures drift with
the machine's other load; the ratios are the steadier figures).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*`, as mypy sees it
from bench.lib.aio import bounded
from bench.lib.ids import run_id
from bench.lib.kube import create_namespace
from bench.lib.machine import load, machine, revision, utc_now
from bench.lib.operator import API_KEY, Operator, prepare_namespace, run_body, run_name
from bench.lib.procfs import cpu_seconds
from bench.lib.testbed import control_plane
from lbtrain.kube import EVENTS, JOBS, MODELRUNS, KubeClient, load_config
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.testbed import ControlPlane

SMOKE_N = 10
Step = Callable[[int], Awaitable[Any]]


async def operator_status(
    kube: KubeClient, plane: ControlPlane, fake: FakeLabelbox, work: Path
) -> dict[str, Any]:
    """The status `lbtrain operator` writes for a new run (Pending, its Job created)."""
    ns = "status-sample"
    await create_namespace(kube, ns)
    await prepare_namespace(kube, ns)
    sample = run_id(ns, 0)
    fake.add_model_run(sample)
    op = Operator(plane.kubeconfig, ns, fake, work / "operator.log")
    op.start()
    try:
        await kube.create(MODELRUNS, run_body(0, sample), ns)
        mr = await kube.wait_for(
            MODELRUNS,
            run_name(0),
            ns,
            lambda mr: bool((mr.get("status") or {}).get("jobName")),
            timeout=60,
        )
    finally:
        op.stop()
    return dict(mr["status"])


async def measure(
    kube: KubeClient,
    pids: dict[str, int],
    n: int,
    concurrency: int,
    step: Step,
) -> tuple[float, float]:
    """(ms of API server + etcd CPU per request, requests/s) for N calls of `step`."""
    await asyncio.sleep(2.0)  # let the previous step's echoes (watches, controllers) settle

    def cpu() -> float:
        return float(sum(cpu_seconds(pids[k]) for k in ("kube-apiserver", "etcd")))

    cpu0, t0 = cpu(), time.perf_counter()
    await bounded(concurrency, n, step)
    seconds = time.perf_counter() - t0
    return (cpu() - cpu0) / n * 1000, n / seconds


async def run(plane: ControlPlane, fake: FakeLabelbox, args: argparse.Namespace) -> list[str]:
    from lbtrain.resources.models import ModelRun, TrainingTemplate
    from lbtrain_operator import jobspec
    from lbtrain_operator.events import event_body
    from lbtrain_operator.settings import Settings

    n, pids = args.n, dict(plane.state.pids)
    async with KubeClient(load_config(str(plane.kubeconfig)), request_timeout=60) as kube:
        with tempfile.TemporaryDirectory(prefix="lbtrain-costs-") as work:
            status = await operator_status(kube, plane, fake, Path(work))
        later = {**status, "message": "a later transition"}
        ns = "costs"
        await create_namespace(kube, ns)
        template = TrainingTemplate.model_validate(await prepare_namespace(kube, ns))
        runs: list[dict[str, Any]] = [{}] * n

        async def create_run(i: int) -> None:
            body = run_body(i, run_id(ns, i), for_operator=False)
            runs[i] = await kube.create(MODELRUNS, body, ns)

        def patch_status(body: dict[str, Any]) -> Step:
            return lambda i: kube.patch(
                MODELRUNS, runs[i]["metadata"]["name"], {"status": body}, ns, subresource="status"
            )

        results: dict[str, tuple[float, float]] = {}
        results["POST modelruns"] = await measure(kube, pids, n, args.concurrency, create_run)
        results["PATCH modelruns/status: the first"] = await measure(
            kube, pids, n, args.concurrency, patch_status(status)
        )
        results["PATCH modelruns/status: a later one"] = await measure(
            kube, pids, n, args.concurrency, patch_status(later)
        )
        stamp = dt.datetime.now(dt.UTC)
        results["POST events"] = await measure(
            kube,
            pids,
            n,
            args.concurrency,
            lambda i: kube.create(
                EVENTS,
                event_body(
                    {**runs[i], "apiVersion": MODELRUNS.api_version, "kind": MODELRUNS.kind},
                    "Normal",
                    "JobCreated",
                    f"Job {runs[i]['metadata']['name']}-train created from template bench",
                    stamp,
                ),
                ns,
                decode=False,
            ),
        )
        results["GET modelruns"] = await measure(
            kube,
            pids,
            n,
            args.concurrency,
            lambda i: kube.get(MODELRUNS, runs[i]["metadata"]["name"], ns),
        )
        settings = Settings(labelbox_endpoint=fake.endpoint)
        jobs = [
            jobspec.build_job(
                ModelRun.model_validate(mr), mr["metadata"]["uid"], template, settings
            )
            for mr in runs
        ]
        results["POST jobs"] = await measure(
            kube, pids, n, args.concurrency, lambda i: kube.create(JOBS, jobs[i], ns, decode=False)
        )
        sizes = {
            "status": len(json.dumps(status)),
            "object": len(json.dumps(await kube.get(MODELRUNS, runs[0]["metadata"]["name"], ns))),
        }
    job_ms = results["POST jobs"][0]
    lines = [
        f"N = {n} requests of each kind, {args.concurrency} in flight. A ModelRun with the "
        f"operator's status is {sizes['object']:,} bytes of JSON, its status {sizes['status']:,}.",
        "",
        "| request | API server + etcd CPU per request (ms) | ratio to `POST jobs` | requests/s |",
        "|---|---:|---:|---:|",
    ]
    for name, (ms, rate) in results.items():
        lines.append(f"| `{name}` | {ms:.1f} | {ms / job_ms:.2f} | {rate:,.0f} |")
    per_run = results["POST modelruns"][0] + job_ms
    extra = results["PATCH modelruns/status: the first"][0] + results["POST events"][0]
    lines += [
        "",
        f"A ModelRun and its Job alone: {per_run:.1f} ms, so at best {job_ms / per_run:.2f} of "
        f"the Job ceiling; with the first status write and the JobCreated Event as well: "
        f"{per_run + extra:.1f} ms, {job_ms / (per_run + extra):.2f} of it.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="requests of each kind")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument(
        "--smoke", action="store_true", help=f"--n {SMOKE_N}: checks that the bench still runs"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.n = SMOKE_N
    if args.n < 10:
        parser.error(f"--n must be at least 10, not {args.n}")
    load_before, started = load(), utc_now()
    with (
        control_plane(prefix="lbtrain-costs-plane-") as plane,
        FakeLabelbox.in_thread(api_key=API_KEY) as fake,
    ):
        lines = asyncio.run(run(plane, fake, args))
    print(
        f"Run on {started} at commit {revision()}. Machine: {machine()}. Load average "
        f"(1/5/15 min) before: {load_before}, after: {load()}."
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
