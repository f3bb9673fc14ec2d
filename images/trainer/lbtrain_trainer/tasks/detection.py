"""Bounding-box detection with torchvision detectors.

Labelbox boxes are ``top/left/height/width`` in pixels of the original image; the export
stored a pre-shrunk copy. Batches carry boxes scaled into the stored image (``x1y1x2y2``, as
torchvision wants), and predictions are scaled back to original pixels.

Detectors run in fp32 (with TF32 on CUDA) rather than bf16 autocast: box regression and
decoding happen inside the model, and bf16's 8-bit mantissa rounds pixel coordinates of a
1333-pixel image to several pixels. On an H100, the small FCOS reached mAP@0.5 0.03 on the
synthetic task under bf16 autocast and 0.43 in fp32 (one run each).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lbtrain_trainer.manifest import Example
from lbtrain_trainer.models.detector import build_detector, detector_label_offset
from lbtrain_trainer.outputs import RowOutput, ScoredBox
from lbtrain_trainer.runtime import Runtime
from lbtrain_trainer.tasks.base import Task, TaskContext, load_image

Batch = tuple[list[torch.Tensor], list[dict[str, torch.Tensor]], list[tuple[float, float]]]


class DetectionTask(Task):
    autocast = False  # fp32 (with TF32): see the module docstring
    channels_last = True

    def __init__(self, ctx: TaskContext) -> None:
        super().__init__(ctx)
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.offset = detector_label_offset(self.hp.model_size)

    def build_model(self) -> nn.Module:
        return build_detector(
            len(self.classes),
            self.hp.model_size,
            self.hp.image_size,
            self.hp.max_image_side,
            self.ctx.pretrained,
            self.ctx.allow_download,
        )

    def collate(self, examples: Sequence[Example], train: bool) -> Batch:
        images, targets, scales = [], [], []
        for example in examples:
            image = load_image(self.media_path(example))
            height, width = image.shape[1:]
            sx = width / (example.width or width)
            sy = height / (example.height or height)
            boxes = torch.tensor(
                [
                    [b.left * sx, b.top * sy, (b.left + b.width) * sx, (b.top + b.height) * sy]
                    for b in example.boxes
                ],
                dtype=torch.float32,
            ).reshape(-1, 4)
            labels = torch.tensor(
                [self.index[b.name] + self.offset for b in example.boxes], dtype=torch.int64
            )
            if train and torch.rand(()) < 0.5:
                image = image.flip(-1)
                boxes = torch.stack(
                    [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1
                )
            images.append(image)
            targets.append({"boxes": boxes, "labels": labels})
            scales.append((sx, sy))
        return images, targets, scales

    def loss(self, model: nn.Module, batch: Any, runtime: Runtime) -> torch.Tensor:
        images, targets, _ = batch
        images = [i.to(runtime.device, non_blocking=True) for i in images]
        targets = [{k: v.to(runtime.device) for k, v in t.items()} for t in targets]
        losses: dict[str, torch.Tensor] = model(images, targets)  # fp32: see the module doc
        return sum((v.float() for v in losses.values()), torch.zeros((), device=runtime.device))

    def predict(
        self, model: nn.Module, batch: Any, examples: Sequence[Example], runtime: Runtime
    ) -> list[RowOutput]:
        images, _, scales = batch
        detections: list[dict[str, torch.Tensor]] = model([i.to(runtime.device) for i in images])
        outputs = []
        for example, det, (sx, sy) in zip(examples, detections, scales, strict=True):
            boxes = []
            for (x1, y1, x2, y2), score, label in zip(
                det["boxes"].float().cpu().tolist(),
                det["scores"].float().cpu().tolist(),
                det["labels"].cpu().tolist(),
                strict=True,
            ):
                cls = label - self.offset
                if 0 <= cls < len(self.classes):
                    boxes.append(
                        ScoredBox(
                            self.classes[cls],
                            x1 / sx,
                            y1 / sy,
                            (x2 - x1) / sx,
                            (y2 - y1) / sy,
                            score,
                        )
                    )
            outputs.append(RowOutput(example.data_row_id, boxes=tuple(boxes)))
        return outputs
