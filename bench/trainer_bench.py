"""Training throughput of the trainer's production models: end to end, compute ceiling, plain fp32.

    python bench/trainer_bench.py [--device cuda|cpu] [--tiny] [--types a,b] [--out DIR]
                                  [--deadline-s 280]
    python bench/trainer_bench.py --host-overhead [--device cpu] [--tiny] [--workers N]
    python bench/trainer_bench.py --smoke   # --tiny on the CPU, one text type: the bench runs

For each production model (ConvNeXt-T for the two image classifiers, a BERT-base-sized
encoder for the text classifiers and NER, Faster R-CNN ResNet-50 FPN v2 for boxes) it measures,
in one process:

- **end to end**: the trainer's own training loop (``train.train_epochs``: the task's collate in
  DataLoader workers with pinned memory, the GPU fast paths of ``runtime.setup``/
  ``prepare_model``, checkpoints after each epoch) on synthetic data that went through the
  trainer's ``export`` media step and ``prepare`` stage, read back from the prepared manifest.
  The rate is the steady state: training examples per second over the epochs after the first
  (the first pays worker start-up and cuDNN autotuning; the checkpoint write between epochs is
  not counted, as the trainer's own throughput figure does not count it);
- **ceiling**: the same model's train step (``train.train_step``, with the same optimiser and
  fast paths) repeated on one batch already on the GPU: no loading, no copies;
- **plain fp32**: the same train step as a plain PyTorch loop would run it: fp32, no autocast,
  no channels-last, AdamW's default (foreach, not fused) implementation, cuDNN benchmark off and
  PyTorch's default TF32 settings (off for matmuls, on for cuDNN convolutions).

It prints ``end to end / ceiling`` (goal >= 0.9) and ``fast path / plain fp32`` (ceiling over
plain; goal >= 2x for the image classifiers). Detectors train in fp32 + TF32 in the trainer (bf16
rounds box coordinates), so their fast path is TF32, cuDNN benchmark and channels-last only.

The weights are **randomly initialised** production architectures saved in the
``LBTRAIN_PRETRAINED`` layout (throughput does not depend on the values, and nothing is
downloaded). The text encoder has BERT-base's shape (12 layers, hidden 768, vocabulary 30,522)
with a WordPiece tokenizer trained on the synthetic texts, which are lengthened to fill
``max_length`` = 128 tokens. Images are the synthetic shapes drawn at 256 px (classifiers,
resized to 224) and 800 px (detector, shorter side 800).

``--tiny`` shrinks everything (rows, image sizes, a 2-layer text encoder, a few steps) so the
script checks itself on a CPU in a minute or two; its numbers mean nothing. It imports only
torch, torchvision, transformers, tokenizers, numpy, pillow and the trainer's modules that need
no Labelbox SDK, so ``PYTHONPATH=.:images/trainer python bench/trainer_bench.py`` runs on a GPU
machine with just the ML stack. Results are printed as they come and, with ``--out``, written
after every model to ``DIR/trainer_bench.json``.

``--host-overhead`` measures instead what the main process pays per batch beside the step, for
the text types at the GPU cases' batch (32 rows of 128 tokens), against text single in the same
run: the tensors and other leaves of a training batch (the pin-memory thread walks the others
in Python), the workers' collate time, the main process's CPU time per batch drawn from the
trainer's own loader, and the aten ops and host reads (``.item()``, ``bool(t)``: GPU syncs on
CUDA) of one forward, loss and backward. It needs no GPU (``--device cpu``); ``--tiny`` uses a
2-layer encoder for the op counts. It writes ``DIR/trainer_host_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "images" / "trainer", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
from bench.trainerbench.host_overhead import host_overhead  # noqa: E402 (the path above first)
from bench.trainerbench.setup import (  # noqa: E402
    GPU_CASES,
    TINY_CASES,
    Case,
    batch_to_device,
    environment,
    lengthen,
    log,
    make_pretrained,
    prepare_workspace,
    sig,
    sync,
)
from lbtrain.contract import MODEL_TYPES  # noqa: E402

SMOKE_TYPE = "text_single_classification"
TYPES = MODEL_TYPES  # every built-in type, in the contract's order
# --- measurements --------------------------------------------------------------------------------


def timed_steps(
    step: Callable[[], Any], warmup: int, steps: int, batch_size: int, device: Any
) -> float:
    """Examples per second of ``steps`` calls of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch_size / (time.perf_counter() - started)


def measure_ceiling(task: Any, model: Any, batch: Any, hp: Any, runtime: Any, case: Case) -> float:
    """The trainer's step, fast paths on, repeated on a batch already on the device."""
    from lbtrain_trainer import train
    from lbtrain_trainer.runtime import make_optimizer, make_scheduler

    optimizer = make_optimizer(model.parameters(), hp, runtime)
    scheduler = make_scheduler(optimizer, 10**6, 0.0)

    def step() -> Any:
        return train.train_step(task, model, batch, optimizer, scheduler, runtime)

    return timed_steps(step, case.warmup_steps, case.ceiling_steps, hp.batch_size, runtime.device)


def measure_plain(task: Any, batch: Any, hp: Any, runtime: Any, case: Case) -> float:
    """The same step as a plain fp32 loop runs it: a fresh model in NCHW, no autocast, AdamW's
    default implementation, cuDNN benchmark off, PyTorch's default TF32 settings."""
    import torch

    from lbtrain_trainer import train
    from lbtrain_trainer.runtime import Runtime, make_scheduler, seed_everything

    flags = (
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    channels_last = task.channels_last
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's defaults
    torch.backends.cudnn.allow_tf32 = True
    task.channels_last = False  # the instance only: no NHWC input conversion
    try:
        plain_runtime = Runtime(runtime.device, bf16=False)
        seed_everything(hp.seed)
        model = task.build_model().to(runtime.device)
        model.train()
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=hp.learning_rate,
            weight_decay=hp.weight_decay,
        )
        scheduler = make_scheduler(optimizer, 10**6, 0.0)

        def step() -> Any:
            return train.train_step(task, model, batch, optimizer, scheduler, plain_runtime)

        return timed_steps(
            step, case.warmup_steps, case.ceiling_steps, hp.batch_size, runtime.device
        )
    finally:
        task.channels_last = channels_last
        (
            torch.backends.cudnn.benchmark,
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
        ) = flags


def bench_type(
    model_type: str, case: Case, root: Path, pretrained: Path, device: str, text_words: int
) -> dict[str, Any]:
    import torch

    from lbtrain_trainer import hyperparams, train
    from lbtrain_trainer.artifacts import Destination
    from lbtrain_trainer.checkpoint import Checkpointer, fingerprint
    from lbtrain_trainer.manifest import PreparedDataset
    from lbtrain_trainer.runtime import prepare_model, seed_everything, setup
    from lbtrain_trainer.splits import Split
    from lbtrain_trainer.tasks import make_task
    from lbtrain_trainer.tasks.base import TaskContext

    started = time.perf_counter()
    ws = root / model_type
    settings, _ = prepare_workspace(model_type, case, ws, pretrained, device, text_words)
    hp = hyperparams.load(ws / "hyperparameters.json")
    dataset = PreparedDataset.load(ws / "prepared" / "dataset.json")
    examples = dataset.split(Split.TRAIN)
    data_s = time.perf_counter() - started
    log(f"{model_type}: {len(examples)} prepared training rows in {data_s:.1f}s")

    # End to end: the trainer's loop, as run_train runs it.
    runtime = setup(hp)
    seed_everything(hp.seed)
    task = make_task(TaskContext(dataset, hp, ws, pretrained, False))
    net = task.build_model()
    # What was measured, read off the network itself rather than a table of type names.
    parameters = sum(p.numel() for p in net.parameters())
    network = f"{type(net).__name__}, {parameters / 1e6:.1f}M parameters"
    model = prepare_model(net, runtime, task.channels_last, hp.compile)
    del net
    checkpointer = Checkpointer(
        Destination(settings.artifact_destination), fingerprint(task.describe(), hp)
    )
    if runtime.cuda:
        torch.cuda.reset_peak_memory_stats(runtime.device)
    state, _, overall_rate = train.train_epochs(task, model, examples, hp, runtime, checkpointer)
    steady = state.history[1:] or state.history
    e2e_rate = len(examples) * len(steady) / sum(h["seconds"] for h in steady)
    peak_gib = torch.cuda.max_memory_allocated(runtime.device) / 2**30 if runtime.cuda else 0.0
    history = list(state.history)
    del state  # it holds the model's and optimiser's tensors
    log(
        f"{model_type}: end to end {e2e_rate:.1f} ex/s steady "
        f"(epochs {[h['seconds'] for h in history]} s; trainer's figure, first epoch "
        f"included: {overall_rate:.1f} ex/s)"
    )

    # Ceiling: the same step on one device-resident batch.
    batch = batch_to_device(task.collate(examples[: hp.batch_size], train=True), runtime.device)
    ceiling = measure_ceiling(task, model, batch, hp, runtime, case)
    log(f"{model_type}: ceiling {ceiling:.1f} ex/s")
    del model
    if runtime.cuda:
        torch.cuda.empty_cache()
    plain = measure_plain(task, batch, hp, runtime, case)
    log(f"{model_type}: plain fp32 {plain:.1f} ex/s")
    del batch
    if runtime.cuda:
        torch.cuda.empty_cache()
    return {
        "model_type": model_type,
        "network": network,
        "rows": len(examples),
        "batch_size": hp.batch_size,
        "epochs": hp.epochs,
        "num_workers": hp.num_workers,
        "input": (f"{hp.image_size} px" if case.source_px else f"{hp.max_length} tokens"),
        "bf16": runtime.bf16 and task.autocast,
        "end_to_end": sig(e2e_rate),
        "end_to_end_trainer_figure": sig(overall_rate),
        "epoch_seconds": [h["seconds"] for h in history],
        "ceiling": sig(ceiling),
        "plain_fp32": sig(plain),
        "e2e_over_ceiling": round(e2e_rate / ceiling, 3),
        "fast_over_plain": round(ceiling / plain, 2),
        "e2e_over_plain": round(e2e_rate / plain, 2),
        "peak_gib": round(peak_gib, 1),
        "data_s": round(data_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model type | network | batch | input | end to end ex/s | ceiling ex/s | plain fp32 "
        "ex/s | e2e / ceiling | fast / plain |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| `{r['model_type']}` | failed: {r['error'][:80]} | | | | | | | |")
            continue
        lines.append(
            f"| `{r['model_type']}` | {r['network']} | {r['batch_size']} | {r['input']} | "
            f"{r['end_to_end']:,.1f} | {r['ceiling']:,.1f} | {r['plain_fp32']:,.1f} | "
            f"{r['e2e_over_ceiling']:.2f} | {r['fast_over_plain']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument(
        "--tiny", action="store_true", help="a quick self-check; numbers mean nothing"
    )
    parser.add_argument("--types", default=",".join(TYPES), help="comma-separated model types")
    parser.add_argument("--out", type=Path, default=None, help="write trainer_bench.json here")
    parser.add_argument(
        "--host-overhead",
        action="store_true",
        help="instead: the main process's cost per batch of the text types, against text single",
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="--host-overhead: loader workers (0: min(4, CPUs))"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"--tiny --device cpu --types {SMOKE_TYPE}: checks that the bench still runs",
    )
    parser.add_argument(
        "--deadline-s",
        type=float,
        default=0.0,
        help="skip the remaining model types once this many seconds have passed (0: never)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.tiny, args.device, args.types = True, "cpu", SMOKE_TYPE
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: use --device cpu", file=sys.stderr)
        return 2
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    unknown = [t for t in types if t not in TYPES]
    if unknown:
        parser.error(f"unknown model types: {unknown}")
    if args.host_overhead:
        return host_overhead(args, types)
    cases = TINY_CASES if args.tiny else GPU_CASES
    text_words = 24 if args.tiny else 160
    began = time.perf_counter()
    info = environment(args.device)
    log(f"environment: {json.dumps(info)}")
    results: list[dict[str, Any]] = []
    report: dict[str, Any] = {"environment": info, "tiny": args.tiny, "results": results}

    def write() -> None:
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "trainer_bench.json").write_text(json.dumps(report, indent=2))

    with tempfile.TemporaryDirectory(prefix="lbtrain-trainer-bench-") as tmp:
        root = Path(tmp)
        from lbtrain_trainer import synthetic

        texts = [
            lengthen(r["data_row"]["row_data"], text_words)
            for t in types
            if not t.startswith(("image", "bounding"))
            for r in synthetic.make_dataset(t, 60).rows
        ]
        started = time.perf_counter()
        make_pretrained(root / "pretrained", types, texts, args.tiny)
        log(f"random production weights saved in {time.perf_counter() - started:.1f}s")
        for model_type in types:
            if args.deadline_s and time.perf_counter() - began > args.deadline_s:
                log(f"{model_type}: skipped (deadline)")
                results.append({"model_type": model_type, "error": "skipped: deadline"})
                continue
            case = cases[model_type]
            try:
                results.append(
                    bench_type(model_type, case, root, root / "pretrained", args.device, text_words)
                )
            except Exception as exc:  # report every type, then fail
                traceback.print_exc()
                results.append({"model_type": model_type, "error": f"{type(exc).__name__}: {exc}"})
            log(json.dumps(results[-1]))
            write()
    report["total_s"] = round(time.perf_counter() - began, 1)
    write()
    print()
    print(table(results))
    print(f"\ntotal {report['total_s']}s; {json.dumps(info)}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
