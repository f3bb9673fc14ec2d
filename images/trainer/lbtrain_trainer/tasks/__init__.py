"""One task per model family: how to batch examples, compute the loss, and predict.

The train loop in :mod:`lbtrain_trainer.train` is the same for every model type; a task
supplies what differs. :func:`make_task` picks the task for a model type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lbtrain_trainer.tasks.base import Task, TaskContext


def make_task(ctx: TaskContext) -> Task:
    model_type = ctx.dataset.model_type
    if model_type in ("image_single_classification", "image_multi_classification"):
        from lbtrain_trainer.tasks.classification import ImageClassificationTask

        return ImageClassificationTask(ctx)
    if model_type in ("text_single_classification", "text_multi_classification"):
        from lbtrain_trainer.tasks.classification import TextClassificationTask

        return TextClassificationTask(ctx)
    if model_type == "bounding_box":
        from lbtrain_trainer.tasks.detection import DetectionTask

        return DetectionTask(ctx)
    from lbtrain_trainer.tasks.ner import NerTask

    return NerTask(ctx)
