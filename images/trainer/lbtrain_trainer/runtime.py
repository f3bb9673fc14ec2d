"""Where training runs: device, torchrun ranks, and the GPU fast paths.

One object answers "which device, which rank, may I talk to Labelbox" for the train stage.
A run of one process has no rank variables: rank 0 of 1 on ``cuda:0``. A template with several
GPUs (or ``numProcPerNode``, or ``numNodes``) makes the operator run ``train`` under torchrun,
which gives each process ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE``: every rank
trains, on GPU ``LOCAL_RANK``, with its part of the container's CPUs; only rank 0 uploads,
writes config, saves weights and checkpoints.
On CUDA the usual fast paths switch on (bf16 autocast, TF32, fused AdamW, pinned memory,
channels_last for CNNs, optional ``torch.compile``); on a CPU the same code runs plainly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn

from lbtrain_trainer.cpus import cpu_quota, threads_per_process
from lbtrain_trainer.hyperparams import Hyperparameters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    bf16: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.cuda and self.bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def local_world_size_from_env() -> int:
    """The processes torchrun started in this container (1 without torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def rank_from_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def setup(hp: Hyperparameters) -> Runtime:
    rank, world, local = rank_from_env()
    if torch.cuda.is_available():
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        device = torch.device("cpu")
    threads = hp.cpu_threads or threads_per_process(cpu_quota(), local_world_size_from_env())
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    bf16 = hp.bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported()
    runtime = Runtime(device, rank, world, local, bf16)
    log.info("runtime: %s, rank %d/%d, bf16=%s", device, rank, world, bf16)
    return runtime


def teardown(runtime: Runtime) -> None:
    if runtime.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(
    params: Iterable[nn.Parameter], hp: Hyperparameters, runtime: Runtime
) -> torch.optim.AdamW:
    trainable = [p for p in params if p.requires_grad]
    return torch.optim.AdamW(
        trainable, lr=hp.learning_rate, weight_decay=hp.weight_decay, fused=runtime.cuda
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    import math

    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def prepare_model(
    model: nn.Module, runtime: Runtime, channels_last: bool, compile_model: bool
) -> nn.Module:
    model.to(runtime.device)
    if channels_last and runtime.cuda:
        model.to(memory_format=torch.channels_last)
    if compile_model and runtime.cuda:
        model = torch.compile(model)  # type: ignore[assignment]
    if runtime.distributed:
        device_ids = [runtime.device.index] if runtime.cuda else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and ``torch.compile`` wrappers (for saving)."""
    inner: nn.Module = model
    while True:
        if isinstance(inner, nn.parallel.DistributedDataParallel):
            inner = cast(nn.Module, inner.module)
        elif hasattr(inner, "_orig_mod"):
            inner = cast(nn.Module, inner._orig_mod)
        else:
            return inner


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)
