"""One task per model family: how to batch examples, compute the loss, and predict.

The train loop in :mod:`lbtrain_trainer.train` is the same for every model type; a task
supplies what differs. The model type picks its task
(:meth:`lbtrain_trainer.modeltypes.base.ModelType.task`); :func:`make_task` asks it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbtrain_trainer.tasks.base import Task, TaskContext


def make_task(ctx: TaskContext) -> Task:
    """The task of the dataset's model type."""
    from lbtrain_trainer.modeltypes import registry

    return registry.get(ctx.dataset.model_type).task(ctx)
