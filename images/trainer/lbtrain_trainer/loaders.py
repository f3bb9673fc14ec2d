"""Examples through the model: the DataLoader of a split and prediction over it.

The train loop (:mod:`lbtrain_trainer.train`), the per-epoch validation
(:mod:`lbtrain_trainer.validation`) and the final evaluation all batch examples the same way:
the task's collate loads the media, a ``DistributedSampler`` shards training across ranks, and
prediction runs on the plain module in eval mode (a DDP wrapper would broadcast buffers to
ranks that are not predicting).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lbtrain_trainer.hyperparams import Hyperparameters
from lbtrain_trainer.manifest import Example
from lbtrain_trainer.outputs import RowOutput
from lbtrain_trainer.runtime import Runtime, eval_mode, unwrap
from lbtrain_trainer.tasks.base import Task


class ExampleList(Dataset[Example]):
    """The examples of a split as a map-style dataset (the task's collate loads the media)."""

    def __init__(self, examples: Sequence[Example]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]


def init_worker(worker_id: int) -> None:
    """A DataLoader worker tokenizes one batch at a time: the ``tokenizers`` thread pool
    (on by default, as many threads as cores, in every worker) would only compete for the
    cores with the main process, whose Python thread launches the training step."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_loader(
    task: Task, examples: Sequence[Example], hp: Hyperparameters, runtime: Runtime, train: bool
) -> DataLoader[Any]:
    dataset = ExampleList(examples)
    sampler: DistributedSampler[Example] | None = None
    if train and runtime.distributed:
        sampler = DistributedSampler(
            dataset,
            num_replicas=runtime.world_size,
            rank=runtime.rank,
            shuffle=True,
            seed=hp.seed,
        )
    generator = torch.Generator().manual_seed(hp.seed)
    return DataLoader(
        dataset,
        batch_size=hp.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        collate_fn=functools.partial(task.collate, train=train),
        num_workers=hp.num_workers,
        worker_init_fn=init_worker if hp.num_workers > 0 else None,
        pin_memory=runtime.cuda,
        generator=generator,
        persistent_workers=train and hp.num_workers > 0,
    )


def epoch_batches(loader: DataLoader[Any], epoch: int) -> Iterator[Any]:
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    return iter(loader)


def predict_all(
    task: Task, model: nn.Module, examples: Sequence[Example], hp: Hyperparameters, runtime: Runtime
) -> list[RowOutput]:
    outputs: list[RowOutput] = []
    loader = make_loader(task, examples, hp, runtime, train=False)
    size = hp.batch_size
    plain = unwrap(model)
    with eval_mode(plain):
        for i, batch in enumerate(loader):
            outputs += task.predict(plain, batch, examples[i * size : (i + 1) * size], runtime)
    return outputs
