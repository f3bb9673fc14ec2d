"""`trainer_bench.py --host-overhead`: what the main process pays per batch beside the step.

For the text types at the GPU cases' batch, against text single in the same run: the leaves of
a training batch (the pin-memory thread walks the non-tensors in Python), the workers' collate
time, the main process's CPU per batch from the trainer's own loader, and the aten ops and host
reads of one forward, loss and backward. No GPU needed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.lib.stats import median
from lbtrain.contract import MODEL_TYPES
from lbtrain_trainer.modeltypes import registry

from .setup import (
    GPU_CASES,
    Case,
    batch_to_device,
    environment,
    lengthen,
    log,
    make_pretrained,
    prepare_workspace,
)

# The text types (their media kind says so) and the one the others are compared with.
TEXT_TYPES = tuple(t for t in MODEL_TYPES if registry.get(t).media == "text")
HOST_BASELINE = TEXT_TYPES[0]


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
    from lbtrain_trainer import loaders

    loader = loaders.make_loader(task, examples, hp, runtime, train=True)
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
