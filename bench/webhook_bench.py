"""Benchmark of `lbtrain webhook` against Labelbox's reference server and against the API server.

    .venv/bin/python bench/webhook_bench.py [--seconds 2] [--rounds 4] [--concurrency 1,10,50]
                                            [--no-write] [--placement shared|split] [--floors]
    .venv/bin/python bench/webhook_bench.py --smoke   # seconds: checks the bench still runs

Needs the `bench` extra (FastAPI and uvicorn, for the reference server): `make bench-deps`.
`--smoke` (tiny rounds, every floor, nothing written) runs without it, leaving the reference out.

Starts a testbed control plane (etcd + kube-apiserver, via lbtrain_dev.testbed), installs the CRDs
and six TrainingTemplates, then runs two servers, each in its own process:

- **lbtrain**: the real webhook, started as `lbtrain webhook` starts it
  (`lbtrain_webhook.cli.main`), INFO JSON logs to /dev/null, metrics on; `POST /model_run`
  creates a ModelRun in the API server before answering.
- **reference**: Labelbox's reference coordinator (`Labelbox/model-training`, FastAPI under
  uvicorn; `bench/labelbox_coordinator.py` says what it follows and what it leaves out): HMAC
  check, a dict answer for `GET /models`; `POST /model_run` validates, schedules a background
  task and answers `null` at once, persisting nothing. Its logs (uvicorn's access log is on) also
  go to /dev/null.
- **api-direct** (POST only): the same ModelRun creates sent by the load generator straight to
  the API server (TLS, bearer token), to show what persisting costs without any webhook.

The load generator (this process) runs C closed-loop clients, each on its own keep-alive
connection, sending requests back to back through a minimal HTTP/1.1 client (below) that costs
far less CPU per request than any of the servers, so that the figures are the servers' and not
the generator's; every target gets the same client. Every POST carries new Labelbox-shaped ids
(cuids). Each cell is measured in `--rounds` alternating rounds (so a shared machine's drift hits
every server alike). Throughput, p50/p99 latency and CPU time per request of each process (from
/proc, robust to a busy machine) are printed with the ratios and written under "## webhook" in
bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import multiprocessing
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
import orjson

# What a run measured and how it is written up: importable as `bench.webhook_results` once the
# checkout is on the path, as it is for mypy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.lib.ids import random_cuid
from bench.lib.machine import load, machine, revision, utc_now
from bench.lib.net import free_port, wait_port
from bench.lib.procfs import cpu_seconds
from bench.lib.signing import signed_header_lines
from bench.lib.testbed import control_plane
from bench.webhook_client import Target
from bench.webhook_results import (
    ENDPOINTS,
    FLOORS,
    SECTION_INTRO,
    Cell,
    Cells,
    report,
    write_section,
    write_split_section,
)
from lbtrain import contract

if TYPE_CHECKING:
    from lbtrain_dev.testbed import ControlPlane

SECRET = "bench-secret"
NAMESPACE = "bench"
# Every built-in type, one of them capitalised as Labelbox's own example names it: the keys of
# GET /models are names, byte for byte.
MODEL_TYPES = (*contract.MODEL_TYPES[:-1], contract.MODEL_TYPES[-1].capitalize())
SMOKE = {"seconds": 0.3, "rounds": 1, "concurrency": "1,4", "floors": True, "no_write": True}


# --- the servers, each in its own process ---------------------------------------------------------
def run_reference(port: int) -> None:
    from bench.labelbox_coordinator import serve  # the repository is on sys.path (main)

    serve(port, SECRET, MODEL_TYPES)


def run_lbtrain(port: int, metrics_port: int, kubeconfig: str) -> None:
    """`lbtrain webhook` as its command line runs it, its JSON log lines (stderr) to /dev/null."""
    from lbtrain_webhook.cli import main

    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    os.environ["LBTRAIN_WEBHOOK_SECRET"] = SECRET
    argv = ["--namespace", NAMESPACE, "--kubeconfig", kubeconfig, "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--metrics-port", str(metrics_port), "--shutdown-timeout", "2"]
    raise SystemExit(main(argv))


def run_floor(floor: str, port: int, kubeconfig: str) -> None:
    from bench import floor_webhooks  # the repository is on sys.path (main)
    from lbtrain.kube import load_config

    if floor == "relay":
        floor_webhooks.serve_relay(port, urlsplit(load_config(kubeconfig).server).netloc)
        return
    serve = {"bare": floor_webhooks.serve_bare, "aiohttp": floor_webhooks.serve_aiohttp}[floor]
    serve(port, kubeconfig, NAMESPACE, SECRET)


# --- the load generator --------------------------------------------------------------------------
def run_body(model_id: str, organization_id: str, n: int) -> bytes:
    return json.dumps(
        {
            "modelRunId": random_cuid(),
            "modelType": MODEL_TYPES[n % len(MODEL_TYPES)],
            "modelId": model_id,
            "organizationId": organization_id,
        }
    ).encode()


async def measure(
    cell: Cell, target: Target, direct: bool, seconds: float, pids: dict[str, int]
) -> None:
    """One round: `cell.clients` closed-loop clients for 0.5 s of warm-up plus `seconds`.
    With `direct`, each POST is the ModelRun create the webhook would send, to the API server."""
    from lbtrain.kube import MODELRUNS
    from lbtrain_webhook.modelruns import build_model_run
    from lbtrain_webhook.payload import parse_model_run

    get = target.request("GET", "/models", extra=signed_header_lines(SECRET))
    create_path = MODELRUNS.path(NAMESPACE) + "?fieldManager=lbtrain"
    model_id, organization_id = random_cuid(), random_cuid()
    counter = iter(range(10**9))
    latencies: list[float] = []
    errors = 0

    def next_request() -> bytes:
        body = run_body(model_id, organization_id, next(counter))
        if direct:
            obj = build_model_run(parse_model_run(body))
            obj = {"apiVersion": MODELRUNS.api_version, "kind": MODELRUNS.kind, **obj}
            json_type = "Content-Type: application/json\r\n"
            return target.request("POST", create_path, orjson.dumps(obj), json_type)
        return target.request("POST", "/model_run", body, signed_header_lines(SECRET, body))

    async def worker(warm_until: float, until: float) -> None:
        nonlocal errors
        conn = await target.connect()
        try:
            while (now := time.perf_counter()) < until:
                request = get if cell.endpoint == "GET /models" else next_request()
                started = time.perf_counter()
                status = await conn.exchange(request)
                if now >= warm_until:
                    latencies.append(time.perf_counter() - started)
                    errors += status >= 300
        finally:
            assert conn.transport is not None
            conn.transport.close()

    start = time.perf_counter()
    warm_until, until = start + 0.5, start + 0.5 + seconds
    warm = asyncio.gather(*(worker(warm_until, until) for _ in range(cell.clients)))
    await asyncio.sleep(max(0.0, warm_until - time.perf_counter()))
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    await warm
    elapsed = time.perf_counter() - warm_until
    for name, pid in pids.items():
        cell.cpu[name] = cell.cpu.get(name, 0.0) + cpu_seconds(pid) - cpu_before[name]
    cell.latencies += latencies
    cell.errors += errors
    cell.seconds += elapsed


# --- setup ----------------------------------------------------------------------------------------
def prepare_cluster(plane: ControlPlane) -> None:
    """The namespace and the six TrainingTemplates (the CRDs are installed by then)."""
    plane.kubectl("create", "namespace", NAMESPACE, check=True)
    items = [
        {
            "apiVersion": "lbtrain.io/v1alpha1",
            "kind": "TrainingTemplate",
            "metadata": {"name": t.lower().replace("_", "-")},
            "spec": {"modelType": t, "description": f"{t} model", "image": "trainer:bench"},
        }
        for t in MODEL_TYPES
    ]
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    plane.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=doc, check=True)


def wait_ready(base: str, timeout: float = 60) -> None:
    async def poll() -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                try:
                    async with http.get(base + "/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError("the webhook did not become ready")

    asyncio.run(poll())


PLACEMENTS = {
    "shared": "shared: the control plane, the servers and the load generator on every CPU",
    "split": "split: etcd and kube-apiserver on CPU {plane}, the servers and the load generator on"
    " CPU {rest}, as a control plane and the node a webhook pod runs on are different machines in"
    " a cluster (every thread pinned with sched_setaffinity)",
}


def pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of ``pid`` to ``cpus`` (threads it starts later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cpus)


def place(placement: str, pids: dict[str, int]) -> str:
    """Put the processes on CPUs as ``placement`` says; returns its description."""
    if placement == "shared":
        return PLACEMENTS["shared"]
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--placement split needs at least 2 CPUs")
    plane, rest = {cpus[0]}, set(cpus[1:])
    for name, pid in pids.items():
        pin(pid, plane if name in ("kube-apiserver", "etcd") else rest)
    return PLACEMENTS["split"].format(plane=cpus[0], rest=",".join(map(str, cpus[1:])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per round")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per cell")
    parser.add_argument("--concurrency", default="1,10,50", help="comma-separated client counts")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/README.md")
    parser.add_argument(
        "--floors",
        action="store_true",
        help="also run bench/floor_webhooks.py's two servers (the least a Python server spends"
        " per POST, with no framework and on aiohttp.web) as POST series, in their own table",
    )
    parser.add_argument(
        "--placement",
        choices=sorted(PLACEMENTS),
        default="shared",
        help="shared: every process on every CPU; split: etcd and kube-apiserver on the first"
        " CPU, the rest on the others (as on separate machines). Each writes its own block.",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"tiny rounds ({SMOKE}), nothing written; without the `bench` extra, no reference",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    levels = [int(c) for c in args.concurrency.split(",")]
    has_reference = all(importlib.util.find_spec(m) is not None for m in ("fastapi", "uvicorn"))
    if not has_reference and not args.smoke:
        print("the reference server needs FastAPI and uvicorn: make bench-deps", file=sys.stderr)
        return 2

    from lbtrain.kube import load_config

    ctx = multiprocessing.get_context("spawn")
    load_before, started = load(), utc_now()
    machine_line = machine()  # before --placement split pins this process to fewer CPUs
    cells: Cells = {}
    with control_plane(prefix="lbtrain-bench-") as plane:
        prepare_cluster(plane)
        kubeconfig = str(plane.kubeconfig)
        ports = {"lbtrain": free_port()}
        procs = {
            "lbtrain": ctx.Process(
                target=run_lbtrain, args=(ports["lbtrain"], free_port(), kubeconfig)
            )
        }
        if has_reference:
            ports["reference"] = free_port()
            procs["reference"] = ctx.Process(target=run_reference, args=(ports["reference"],))
        for floor in FLOORS if args.floors else ():
            ports[floor] = free_port()
            procs[floor] = ctx.Process(target=run_floor, args=(floor, ports[floor], kubeconfig))
        try:
            for proc in procs.values():
                proc.start()
            for port in ports.values():
                wait_port(port)
            wait_ready(f"http://127.0.0.1:{ports['lbtrain']}")
            pids = {name: int(proc.pid or 0) for name, proc in procs.items()}
            pids |= {k: plane.state.pids[k] for k in ("kube-apiserver", "etcd")}
            pids["generator"] = os.getpid()
            placement = place(args.placement, pids)
            api_direct = Target.api_server(load_config(kubeconfig))
            targets = {name: Target.local(port) for name, port in ports.items()}
            targets["api-direct"] = api_direct
            if "relay" in ports:  # api-direct's requests, TLS and all, through the relay
                targets["relay"] = replace(api_direct, port=ports["relay"])
            asyncio.run(run_cells(cells, targets, levels, args, pids))
        finally:
            for proc in procs.values():
                if proc.pid is not None:
                    proc.terminate()
                    proc.join(10)
    table = report(cells, levels)
    text = (
        f"{SECTION_INTRO if args.placement == 'shared' else ''}\nMachine: {machine_line}. "
        f"Placement: {placement}. Run on {started} at commit {revision()}. "
        f"Load average (1/5/15 min) before: {load_before}, after: {load()} (the machine is "
        f"shared). {args.rounds} alternating rounds of {args.seconds:g} s per cell, each after "
        f"0.5 s of warm-up.\n\n{table}\n"
    )
    print()
    print(table)
    errors = sum(cell.errors for cell in cells.values())
    measured = sum(cell.requests for cell in cells.values())
    print(f"webhook_bench: {len(cells)} cells, {measured} requests measured, {errors} errors")
    if errors or not measured:
        return 1
    if not args.no_write and args.placement == "split":
        write_split_section(text)
        print("\nwritten to bench/README.md")
    elif not args.no_write:
        write_section(text)
        print("\nwritten to bench/README.md")
    return 0


async def run_cells(
    cells: Cells,
    targets: dict[str, Target],
    levels: list[int],
    args: argparse.Namespace,
    pids: dict[str, int],
) -> None:
    """Every cell: each endpoint and concurrency, its servers in alternating rounds."""
    floors = [f for f in FLOORS if f in targets]
    for endpoint in ENDPOINTS:
        series: list[str] = [s for s in ("lbtrain", "reference") if s in targets]
        if endpoint == "POST /model_run":
            series += ["api-direct", *floors]
        for c in levels:
            for rnd in range(args.rounds):  # alternate, so drift hits all alike
                for name in series if rnd % 2 == 0 else series[::-1]:
                    cell = cells.setdefault((name, endpoint, c), Cell(name, endpoint, c))
                    direct = name in ("api-direct", "relay")
                    await measure(cell, targets[name], direct, args.seconds, pids)
            for name in series:
                cell = cells[(name, endpoint, c)]
                print(
                    f"{name:10} {endpoint:16} c={c:<3} {cell.rps:8.0f} req/s  "
                    f"p50 {cell.ms(0.5):7.2f} ms  p99 {cell.ms(0.99):7.2f} ms  "
                    f"errors {cell.errors}",
                    flush=True,
                )


if __name__ == "__main__":
    raise SystemExit(main())
