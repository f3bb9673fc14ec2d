"""What each request a ModelRun costs kube-apiserver + etcd, in CPU, against a Job's create.

    .venv/bin/python bench/apiserver_costs.py [--n 1000] [--concurrency 32]

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

from lbtrain.kube import (
    EVENTS,
    JOBS,
    MODELRUNS,
    SECRETS,
    TRAININGTEMPLATES,
    KubeClient,
    load_config,
)
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed.binaries import ensure_binaries

# The operator benchmark's helpers (control plane, template, operator process): importable as
# `bench.operator_bench` once the checkout is on the path, as it is for mypy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import operator_bench as ob

Step = Callable[[int], Awaitable[Any]]


async def operator_status(
    kube: KubeClient, plane: ControlPlane, fake: FakeLabelbox, work: Path
) -> dict[str, Any]:
    """The status `lbtrain operator` writes for a new run (Pending, its Job created)."""
    ns = "status-sample"
    await ob.create_namespace(kube, ns)
    secret = {"metadata": {"name": "lbtrain-labelbox"}, "stringData": {"api-key": ob.API_KEY}}
    await kube.create(SECRETS, secret, ns)
    await kube.create(TRAININGTEMPLATES, ob.TEMPLATE, ns)
    fake.add_model_run(fake_cuid("status-sample-0"))
    op = ob.Operator(plane.kubeconfig, ns, fake, work / "operator.log", None)
    op.start()
    try:
        await kube.create(MODELRUNS, ob.run_body(0, fake_cuid("status-sample-0")), ns)
        mr = await kube.wait_for(
            MODELRUNS,
            "run-00000",
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
        return float(sum(ob.cpu_seconds(pids[k]) for k in ("kube-apiserver", "etcd")))

    cpu0, t0 = cpu(), time.perf_counter()
    await ob.bounded(concurrency, n, step)
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
        await ob.create_namespace(kube, ns)
        template = TrainingTemplate.model_validate(
            await kube.create(TRAININGTEMPLATES, ob.TEMPLATE, ns)
        )
        runs: list[dict[str, Any]] = [{}] * n

        async def create_run(i: int) -> None:
            body = ob.run_body(i, f"costs-{i}", for_operator=False)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="requests of each kind")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    args = parser.parse_args()
    if args.n < 10:
        parser.error(f"--n must be at least 10, not {args.n}")
    bin_dir = ensure_binaries()
    with (
        tempfile.TemporaryDirectory(prefix="lbtrain-costs-plane-") as run_dir,
        FakeLabelbox.in_thread(api_key=ob.API_KEY) as fake,
    ):
        plane = ControlPlane(bin_dir, Path(run_dir))
        plane.start(die_with_parent=True)
        try:
            plane.install_crds(ob.REPO / "crds")
            lines = asyncio.run(run(plane, fake, args))
        finally:
            plane.stop()
    print(f"Machine: {ob.machine()}.")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
