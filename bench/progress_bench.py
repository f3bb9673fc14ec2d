"""Live training progress costs the train loop nothing: examples/s with progress on vs off.

    python bench/progress_bench.py [--device cuda|cpu] [--rounds 3] [--interval-s 1] [--tiny]
                                   [--rows N] [--epochs N] [--reports 300]
    python bench/progress_bench.py --smoke   # --tiny on the CPU, one round: the bench runs

The trainer's own loop (``train.train_epochs``) trains the text classifier on synthetic rows
that went through the export media step and the prepare stage (as ``trainer_bench.py`` sets
them up), without a reporter and with rank 0's ``LiveProgress`` posting every report to a real
HTTP endpoint on loopback, ``--rounds`` times each, each from a fresh model, the order
alternating by round (off then on, then on then off: a drifting machine favours neither). Reports
go at most every ``--interval-s`` (default 1 s: 30 times the templates' default, a stress; every
step reads the clock, and a due step reads the loss from the device). The figure is the median
over rounds of steady examples/s (epochs after the first) with progress on over off; the issue's
bar is >= 0.99.

Then the operator's side (``--reports N``, 0 skips it): a testbed control plane, a ModelRun with
its Job and a pod of that Job, a token the API server bound to the pod, and the operator's
progress endpoint served in this process; N reports, each newer than the last, are posted to it
one at a time, and the process's CPU time is measured, then the same N posts to an endpoint that
only answers 202: the difference over N is the operator's CPU per report (the TokenReview, the
pod, Job and run GETs, the status patch, the JSON). The API server's CPU over the same N reports
is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "images" / "trainer", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
from bench.trainerbench.setup import (  # noqa: E402 (the path above first)
    GPU_CASES,
    TINY_CASES,
    environment,
    lengthen,
    log,
    make_pretrained,
    prepare_workspace,
)

TYPE = "text_single_classification"


class Sink:
    """The operator's endpoint, as far as the trainer can tell: answers 202 to every report."""

    def __init__(self) -> None:
        self.reports = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.reports += 1
                self.send_response(202)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/progress"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def steady_rate(history: list[dict[str, Any]], rows: int) -> float:
    steady = history[1:] or history
    return float(rows * len(steady) / sum(h["seconds"] for h in steady))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval-s", type=float, default=1.0)
    parser.add_argument("--tiny", action="store_true", help="the 2-layer encoder, few rows")
    parser.add_argument("--rows", type=int, default=0, help="training rows (0: the case's)")
    parser.add_argument("--epochs", type=int, default=0, help="epochs (0: the case's)")
    parser.add_argument("--reports", type=int, default=300, help="operator CPU: reports (0: skip)")
    parser.add_argument(
        "--smoke", action="store_true", help="--tiny --device cpu --rounds 1 --reports 20"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.tiny, args.device, args.rounds, args.reports = True, "cpu", 1, 20
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from lbtrain_trainer import hyperparams, synthetic, train
    from lbtrain_trainer.artifacts import Destination
    from lbtrain_trainer.checkpoint import Checkpointer, fingerprint
    from lbtrain_trainer.live_progress import LiveProgress, post
    from lbtrain_trainer.manifest import PreparedDataset
    from lbtrain_trainer.runtime import prepare_model, seed_everything, setup
    from lbtrain_trainer.splits import Split
    from lbtrain_trainer.tasks import make_task
    from lbtrain_trainer.tasks.base import TaskContext

    case = (TINY_CASES if args.tiny else GPU_CASES)[TYPE]
    case = dataclasses.replace(case, rows=args.rows or case.rows, epochs=args.epochs or case.epochs)
    words = 24 if args.tiny else 160
    log(f"environment: {json.dumps(environment(args.device))}")
    sink = Sink()
    rates: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="lbtrain-progress-bench-") as tmp:
        root = Path(tmp)
        texts = [
            lengthen(r["data_row"]["row_data"], words)
            for r in synthetic.make_dataset(TYPE, 60).rows
        ]
        make_pretrained(root / "pretrained", [TYPE], texts, args.tiny)
        ws = root / "ws"
        _, _ = prepare_workspace(TYPE, case, ws, root / "pretrained", args.device, words)
        hp = hyperparams.load(ws / "hyperparameters.json")
        dataset = PreparedDataset.load(ws / "prepared" / "dataset.json")
        examples = dataset.split(Split.TRAIN)
        runtime = setup(hp)
        token = root / "token"
        token.write_text("bench-token")
        for round_ in range(args.rounds):
            # ABBA: the order alternates by round, so a machine that speeds up or slows down
            # over the run (it does: a VM) does not favour whichever mode runs second.
            for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                seed_everything(hp.seed)
                task = make_task(TaskContext(dataset, hp, ws, root / "pretrained", False))
                model = prepare_model(task.build_model(), runtime, task.channels_last, hp.compile)
                target = root / f"artifacts-{round_}-{mode}"
                checkpointer = Checkpointer(
                    Destination(str(target)), fingerprint(task.describe(), hp)
                )
                live = None
                if mode == "on":
                    live = LiveProgress(
                        "mr-bench",
                        lambda r: post(sink.url, str(token), r, 5.0),
                        interval_s=args.interval_s,
                    )
                started = time.perf_counter()
                state, _, _ = train.train_epochs(
                    task, model, examples, hp, runtime, checkpointer, live
                )
                if live is not None:
                    live.close()
                rate = steady_rate(state.history, len(examples))
                rates[mode].append(rate)
                log(
                    f"round {round_ + 1} progress {mode}: {rate:.2f} ex/s steady "
                    f"({time.perf_counter() - started:.1f}s, {sink.reports} reports so far)"
                )
    ratios = [on / off for on, off in zip(rates["on"], rates["off"], strict=True)]
    ratio = statistics.median(ratios) if ratios else float("nan")
    if ratios:
        print(
            f"progress_bench: {TYPE} on {args.device}, {args.rounds} rounds, reports every "
            f"{args.interval_s:g}s: examples/s with progress on / off = {ratio:.3f} "
            f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}; {sink.reports} reports delivered)"
        )
    if args.reports:
        asyncio.run(operator_cost(args.reports))
    return 0


async def post_all(url: str, token: str, bodies: list[dict[str, Any]]) -> float:
    """CPU seconds of this process to post every body, one at a time (each must be taken)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        started = time.process_time()
        for body in bodies:
            async with session.post(url, json=body, headers=headers) as answer:
                assert answer.status == 202, await answer.text()
        return time.process_time() - started


async def operator_cost(reports: int) -> None:
    import datetime as dt

    from aiohttp import web

    from bench.lib.procfs import cpu_of
    from bench.lib.testbed import control_plane
    from lbtrain.kube import NAMESPACES, KubeClient, load_config
    from lbtrain_dev.liveprogress import run_with_pod
    from lbtrain_dev.testbed.controlplane import free_port
    from lbtrain_operator.progress_server import ProgressEndpoint, start

    with control_plane() as plane:
        async with KubeClient(load_config(str(plane.kubeconfig))) as kube:
            await kube.create(NAMESPACES, {"metadata": {"name": "bench-progress"}})
            made = await run_with_pod(kube, "bench-progress", "bench")
            base = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)

            def bodies(offset: int) -> list[dict[str, Any]]:
                return [
                    {
                        "modelRunId": made["run"]["spec"]["modelRunId"],
                        "epoch": 1, "epochs": 1, "step": i % 100, "steps": 100,
                        "trainLoss": 0.5, "validationMetric": None, "validationValue": None,
                        "examplesPerSecond": 100.0, "etaSeconds": 10.0,
                        "measuredAt": (base + dt.timedelta(seconds=offset + i)).isoformat(),
                    }
                    for i in range(reports)
                ]  # fmt: skip

            endpoint = ProgressEndpoint(kube, lambda *_: None)
            port = free_port()
            runner = await start(endpoint, "127.0.0.1", port)
            url = f"http://127.0.0.1:{port}/progress"
            await post_all(url, made["token"], bodies(0)[:5])  # warm: connections, imports
            server = cpu_of(plane.state.pids)
            real = await post_all(url, made["token"], bodies(10))
            server_after = cpu_of(plane.state.pids)
            await runner.cleanup()

            async def taken(_: web.Request) -> web.Response:
                return web.json_response({"accepted": True}, status=202)

            app = web.Application()
            app.router.add_post("/progress", taken)
            floor_runner = web.AppRunner(app, access_log=None)
            await floor_runner.setup()
            floor_port = free_port()
            await web.TCPSite(floor_runner, "127.0.0.1", floor_port).start()
            floor_url = f"http://127.0.0.1:{floor_port}/progress"
            await post_all(floor_url, made["token"], bodies(0)[:5])
            floor = await post_all(floor_url, made["token"], bodies(10))
            await floor_runner.cleanup()
    apiserver = sum(server_after[k] - server[k] for k in server if "apiserver" in k)
    per_report_ms = 1000 * (real - floor) / reports
    print(
        f"progress_bench: operator CPU per progress report {per_report_ms:.2f} ms "
        f"({reports} reports; {1000 * real / reports:.2f} ms with the client, the client alone "
        f"{1000 * floor / reports:.2f} ms); kube-apiserver CPU per report "
        f"{1000 * apiserver / reports:.2f} ms"
    )


if __name__ == "__main__":
    raise SystemExit(main())
