"""Live training progress costs the train loop nothing: examples/s with progress on vs off.

    python bench/progress_bench.py [--device cuda|cpu] [--rounds 3] [--interval-s 1] [--tiny]
                                   [--rows N] [--epochs N]
    python bench/progress_bench.py --smoke   # --tiny on the CPU, one round: the bench runs

The trainer's own loop (``train.train_epochs``) trains the text classifier on synthetic rows
that went through the export media step and the prepare stage (as ``trainer_bench.py`` sets
them up), alternately without a reporter and with rank 0's ``LiveProgress`` posting every report
to a real HTTP endpoint on loopback, ``--rounds`` times each, each from a fresh model. Reports
go at most every ``--interval-s`` (default 1 s: 30 times the templates' default, a stress; every
step reads the clock, and a due step reads the loss from the device). The figure is the median
over rounds of steady examples/s (epochs after the first) with progress on over off; the issue's
bar is >= 0.99. The operator's side of a report (a TokenReview, three GETs, a status patch) is
not measured here.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--smoke", action="store_true", help="--tiny --device cpu --rounds 1")
    args = parser.parse_args(argv)
    if args.smoke:
        args.tiny, args.device, args.rounds = True, "cpu", 1
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
            for mode in ("off", "on"):
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
    ratio = statistics.median(ratios)
    print(
        f"progress_bench: {TYPE} on {args.device}, {args.rounds} rounds, reports every "
        f"{args.interval_s:g}s: examples/s with progress on / off = {ratio:.3f} "
        f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}; {sink.reports} reports delivered)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
