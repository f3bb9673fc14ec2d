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
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "images" / "trainer", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
from bench.lib.machine import revision, utc_now  # noqa: E402 (the path above first)
from bench.lib.stats import median  # noqa: E402

SMOKE_TYPE = "text_single_classification"
TYPES = (
    "image_single_classification",
    "bounding_box",
    "text_single_classification",
    "ner",
    "image_multi_classification",
    "text_multi_classification",
)
FILLER = [
    "the",
    "report",
    "was",
    "shared",
    "with",
    "the",
    "whole",
    "group",
    "and",
    "everyone",
    "read",
    "it",
    "carefully",
    "before",
    "the",
    "meeting",
    "started",
    "in",
    "the",
    "late",
    "afternoon",
]


@dataclass(frozen=True)
class Case:
    """How one model type is benchmarked."""

    rows: int
    batch_size: int
    epochs: int
    ceiling_steps: int
    warmup_steps: int
    num_workers: int
    source_px: int = 0  # synthetic image side (image types)
    hp: dict[str, Any] = field(default_factory=dict)


GPU_CASES = {
    "image_single_classification": Case(2560, 128, 3, 30, 5, 12, 256, {"image_size": 224}),
    "image_multi_classification": Case(2560, 128, 3, 30, 5, 12, 256, {"image_size": 224}),
    "text_single_classification": Case(2048, 32, 3, 40, 5, 4, hp={"max_length": 128}),
    "text_multi_classification": Case(2048, 32, 3, 40, 5, 4, hp={"max_length": 128}),
    "ner": Case(2048, 32, 3, 40, 5, 4, hp={"max_length": 128}),
    "bounding_box": Case(160, 8, 3, 10, 3, 12, 800, {"image_size": 800, "max_image_side": 1333}),
}
TINY_CASES = {
    "image_single_classification": Case(24, 4, 2, 3, 1, 2, 80, {"image_size": 64}),
    "image_multi_classification": Case(24, 4, 2, 3, 1, 2, 80, {"image_size": 64}),
    "text_single_classification": Case(24, 4, 2, 3, 1, 2, hp={"max_length": 32}),
    "text_multi_classification": Case(24, 4, 2, 3, 1, 2, hp={"max_length": 32}),
    "ner": Case(24, 4, 2, 3, 1, 2, hp={"max_length": 32}),
    # Faster R-CNN v2's box head costs about the same per sampled RoI at any image size (tens
    # of seconds a step on one CPU core): one step per epoch.
    "bounding_box": Case(
        2, 2, 2, 1, 0, 0, 96, {"image_size": 96, "max_image_side": 96, "min_examples_per_class": 1}
    ),
}


def sig(value: float) -> float:
    """Four significant figures (the tiny CPU run's rates are well below 1)."""
    return float(f"{value:.4g}")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- pretrained weights (random) in the LBTRAIN_PRETRAINED layout -------------------------------


def make_pretrained(root: Path, types: list[str], texts: list[str], tiny: bool) -> None:
    import torch

    from lbtrain_trainer.models.pretrained import CONVNEXT_FILE, DETECTOR_FILE, TEXT_DIR

    root.mkdir(parents=True, exist_ok=True)
    if any(t.startswith("image") for t in types):
        from torchvision.models import convnext_tiny

        torch.save(convnext_tiny(weights=None).state_dict(), root / CONVNEXT_FILE)
    if "bounding_box" in types:
        from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

        detector = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None)
        torch.save(detector.state_dict(), root / DETECTOR_FILE)
    if any(t.startswith("text") or t == "ner" for t in types):
        from lbtrain_trainer.synthetic import save_random_text_encoder

        if tiny:
            save_random_text_encoder(
                root / TEXT_DIR,
                texts,
                2000,
                min_model_vocab=1000,
                hidden_size=128,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=256,
            )
        else:  # bert-base-uncased's shape
            save_random_text_encoder(root / TEXT_DIR, texts, 2000, min_model_vocab=30522)


# --- synthetic data through the trainer's export media step and prepare stage -------------------


def lengthen(text: str, words: int) -> str:
    """Append neutral filler (after any entity, so NER offsets stay valid)."""
    extra = [FILLER[i % len(FILLER)] for i in range(max(0, words - len(text.split())))]
    return f"{text} {' '.join(extra)}".strip()


def synthetic_rows(model_type: str, case: Case, text_words: int) -> list[dict[str, Any]]:
    from lbtrain_trainer import synthetic

    data = synthetic.make_dataset(
        model_type,
        case.rows,
        model_run_id="mr-bench",
        image_size=case.source_px or 64,
        assign_splits=False,  # with validation/test fractions 0: every row trains
    )
    rows = data.rows
    if not case.source_px:
        for row in rows:
            row["data_row"]["row_data"] = lengthen(row["data_row"]["row_data"], text_words)
    return rows


def prepare_workspace(
    model_type: str, case: Case, ws: Path, pretrained: Path, device: str, text_words: int
) -> tuple[Any, Any]:
    """Export rows -> media -> prepared manifest, as the export and prepare stages write them."""
    from lbtrain_trainer import export, hyperparams, prepare
    from lbtrain_trainer.settings import Settings

    rows = synthetic_rows(model_type, case, text_words)
    ws.mkdir(parents=True)
    (ws / "export.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = {
        "model_size": "production",
        "epochs": case.epochs,
        "batch_size": case.batch_size,
        "num_workers": case.num_workers,
        "validation_fraction": 0.0,
        "test_fraction": 0.0,
        **case.hp,
    }
    if device == "cpu":
        template["cpu_threads"] = max(1, (os.cpu_count() or 2) // 2)
    settings = Settings(
        model_run_id="mr-bench",
        model_type=model_type,
        workspace=ws,
        model_id="model-1",
        hyperparameters=template,
        pretrained=pretrained,
        artifacts=str(ws / "artifacts"),
    )
    hp, _ = hyperparams.resolve_hyperparameters(model_type, template, {})
    hyperparams.save(hp, ws / "hyperparameters.json")
    export.fetch_media(settings, hp)
    prepare.run_prepare(settings)
    return settings, hp


# --- measurements --------------------------------------------------------------------------------


def batch_to_device(batch: Any, device: Any) -> Any:
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: batch_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [batch_to_device(v, device) for v in batch]
    if isinstance(batch, tuple):
        return tuple(batch_to_device(v, device) for v in batch)
    return batch


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    model = prepare_model(task.build_model(), runtime, task.channels_last, hp.compile)
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
    network = {
        "image_single_classification": "ConvNeXt-T",
        "image_multi_classification": "ConvNeXt-T",
        "text_single_classification": "BERT-base-shaped sequence classifier",
        "text_multi_classification": "BERT-base-shaped sequence classifier",
        "ner": "BERT-base-shaped token classifier",
        "bounding_box": "Faster R-CNN R50-FPN v2",
    }[model_type]
    return {
        "model_type": model_type,
        "network": network,
        "rows": len(examples),
        "batch_size": hp.batch_size,
        "epochs": hp.epochs,
        "num_workers": hp.num_workers,
        "input": (f"{hp.image_size} px" if case.source_px else f"{hp.max_length} tokens"),
        "bf16": runtime.bf16 and model_type != "bounding_box",
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


# --- host overhead per batch of the text types (--host-overhead) -------------------------------

TEXT_TYPES = ("text_single_classification", "text_multi_classification", "ner")
HOST_BASELINE = "text_single_classification"


def batch_leaves(batch: Any) -> tuple[int, int, int]:
    """(tensors, other leaves, tensor bytes) of a batch: the pin-memory thread walks every
    leaf of a dict, list or tuple in Python, holding the GIL."""
    import torch

    if isinstance(batch, torch.Tensor):
        return 1, 0, batch.numel() * batch.element_size()
    if isinstance(batch, dict):
        items = list(batch.values())
    elif isinstance(batch, list | tuple):
        items = list(batch)
    else:
        return 0, 1, 0
    tensors, others, size = 0, 0, 0
    for item in items:
        t, o, b = batch_leaves(item)
        tensors, others, size = tensors + t, others + o, size + b
    return tensors, others, size


def count_step_ops(task: Any, model: Any, batch: Any, runtime: Any) -> tuple[int, int]:
    """(aten ops, host reads of a tensor) in one forward, loss and backward of the trainer's
    step. Every op is a dispatch (and on a GPU a kernel launch or more) the host pays for; a
    host read (``.item()``, ``bool(t)``) is a GPU sync on CUDA. The optimiser is left out: on
    a CPU it is AdamW's per-tensor loop, on a GPU one fused kernel group."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        ops = 0
        reads = 0

        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            Counter.ops += 1
            if func is torch.ops.aten._local_scalar_dense.default:
                Counter.reads += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        loss = task.loss(model, batch, runtime)
        torch.autograd.backward(loss)
    model.zero_grad(set_to_none=True)
    return Counter.ops, Counter.reads


def loader_host_ms(task: Any, examples: list[Any], hp: Any, runtime: Any, epochs: int) -> float:
    """CPU milliseconds the main process spends per batch drawn from the trainer's own loader
    (workers, pinned memory on CUDA), the consumer doing nothing: receiving each batch from a
    worker (a file descriptor per tensor storage), pinning, queueing indices. All its threads
    count (the pin-memory thread too); the workers, separate processes, do not."""
    from lbtrain_trainer import train

    loader = train._loader(task, examples, hp, runtime, train=True)
    batches = iter(loader)
    next(batches)  # the workers are up
    per_epoch = []
    for epoch in range(epochs):
        if epoch:
            batches = iter(loader)
        count, cpu = 0, time.process_time()
        for _ in batches:
            count += 1
        per_epoch.append(1000 * (time.process_time() - cpu) / max(1, count))
    del batches, loader
    return sorted(per_epoch)[len(per_epoch) // 2]  # the median epoch: a shared machine is noisy


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * median(times)


def host_overhead_type(
    model_type: str, root: Path, pretrained: Path, device: str, workers: int, text_words: int
) -> dict[str, Any]:
    import torch

    from lbtrain_trainer import hyperparams
    from lbtrain_trainer.manifest import PreparedDataset
    from lbtrain_trainer.runtime import Runtime, seed_everything
    from lbtrain_trainer.splits import Split
    from lbtrain_trainer.tasks import make_task
    from lbtrain_trainer.tasks.base import TaskContext

    gpu = GPU_CASES[model_type]  # the GPU benchmark's batch and length
    case = Case(gpu.batch_size * 16, gpu.batch_size, 1, 1, 0, workers, hp=gpu.hp)
    ws = root / model_type
    prepare_workspace(model_type, case, ws, pretrained, device, text_words)
    hp = hyperparams.load(ws / "hyperparameters.json")
    dataset = PreparedDataset.load(ws / "prepared" / "dataset.json")
    examples = dataset.split(Split.TRAIN)
    cuda = device == "cuda"
    runtime = Runtime(torch.device("cuda" if cuda else "cpu"), bf16=cuda)
    seed_everything(hp.seed)
    task = make_task(TaskContext(dataset, hp, ws, pretrained, False))
    rows = examples[: hp.batch_size]
    batch = task.collate(rows, train=True)
    tensors, others, size = batch_leaves(batch)
    collate_ms = median_ms(lambda: task.collate(rows, train=True), 25)
    loader_ms = loader_host_ms(task, examples, hp, runtime, epochs=5)
    model = task.build_model().to(runtime.device)
    model.train()
    device_batch = batch_to_device(batch, runtime.device)
    count_step_ops(task, model, device_batch, runtime)  # warm-up: lazy initialisation
    ops, reads = count_step_ops(task, model, device_batch, runtime)
    result = {
        "model_type": model_type,
        "batch_size": hp.batch_size,
        "max_length": hp.max_length,
        "batch_tensors": tensors,
        "batch_other_leaves": others,
        "batch_kib": round(size / 1024, 1),
        "collate_ms": round(collate_ms, 2),
        "loader_main_ms_per_batch": round(loader_ms, 3),
        "ops_per_step": ops,
        "host_reads_per_step": reads,
        "workers": workers,
    }
    log(json.dumps(result))
    return result


def host_overhead_table(results: list[dict[str, Any]]) -> str:
    base = next((r for r in results if r["model_type"] == HOST_BASELINE), results[0])

    def ratio(r: dict[str, Any], key: str) -> str:
        return f"{r[key] / base[key]:.2f}" if base[key] else "-"

    lines = [
        f"ratios against `{base['model_type']}` in the same run",
        "| model type | tensors / other leaves | KiB | collate ms (ratio) | main-process ms a "
        "batch (ratio) | aten ops a step (ratio) | host reads a step |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| `{r['model_type']}` | {r['batch_tensors']} / {r['batch_other_leaves']} | "
            f"{r['batch_kib']} | {r['collate_ms']} ({ratio(r, 'collate_ms')}) | "
            f"{r['loader_main_ms_per_batch']} ({ratio(r, 'loader_main_ms_per_batch')}) | "
            f"{r['ops_per_step']} ({ratio(r, 'ops_per_step')}) | {r['host_reads_per_step']} |"
        )
    return "\n".join(lines)


def host_overhead(args: argparse.Namespace, types: list[str]) -> int:
    """What the main process pays per batch, per text type, beside the step itself."""
    from lbtrain_trainer import synthetic

    types = [t for t in types if t in TEXT_TYPES] or list(TEXT_TYPES)
    if HOST_BASELINE not in types:
        types.insert(0, HOST_BASELINE)
    workers = args.workers or min(4, os.cpu_count() or 1)
    text_words = 160  # fills the GPU cases' 128 tokens, as the main benchmark does
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lbtrain-host-overhead-") as tmp:
        root = Path(tmp)
        texts = [
            lengthen(r["data_row"]["row_data"], text_words)
            for t in types
            for r in synthetic.make_dataset(t, 60).rows
        ]
        make_pretrained(root / "pretrained", types, texts, args.tiny)
        for model_type in types:
            results.append(
                host_overhead_type(
                    model_type, root, root / "pretrained", args.device, workers, text_words
                )
            )
    report = {"environment": environment(args.device), "host_overhead": results}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "trainer_host_overhead.json").write_text(json.dumps(report, indent=2))
    print()
    print(host_overhead_table(results))
    return 0


def environment(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "device": device,
        "date": utc_now(),
        "commit": revision(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    else:
        info["cpu"] = platform.processor() or platform.machine()
    try:
        import torchvision
        import transformers

        info["torchvision"] = torchvision.__version__
        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


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
