"""Object detectors: FCOS on a tiny backbone for CPU tests, Faster R-CNN v2 for production.

Torchvision's detection models take a list of images in [0, 1] and boxes in those images'
pixels, resize internally, and return boxes in the input's pixels, so the task only scales
between the pre-shrunk stored image and the original image Labelbox's boxes refer to.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from lbtrain_trainer.models.pretrained import DETECTOR_FILE, weights_file


class TinyBackbone(nn.Module):
    """Strided convs returning two feature maps (strides 8 and 16) for FCOS."""

    out_channels = 64

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1),
                nn.GroupNorm(8, cout),
                nn.ReLU(inplace=True),
            )

        self.stem = nn.Sequential(block(3, 32), block(32, 64), block(64, 64))
        self.down = block(64, 64)

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        stride8 = self.stem(images)
        return OrderedDict([("0", stride8), ("1", self.down(stride8))])


def detector_label_offset(model_size: str) -> int:
    """Faster R-CNN reserves label 0 for the background; FCOS does not."""
    return 0 if model_size == "small" else 1


def build_detector(
    num_classes: int,
    model_size: str,
    image_size: int,
    max_image_side: int,
    pretrained: Path | None,
    allow_download: bool,
) -> nn.Module:
    from torchvision.models.detection import FCOS, fasterrcnn_resnet50_fpn_v2
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    if model_size == "small":
        anchors = AnchorGenerator(sizes=((16,), (32,)), aspect_ratios=((1.0,), (1.0,)))
        small: nn.Module = FCOS(
            TinyBackbone(),
            num_classes=num_classes,
            min_size=image_size,
            max_size=max(image_size, max_image_side),
            anchor_generator=anchors,
            score_thresh=0.05,
            detections_per_img=50,
            topk_candidates=200,
        )
        return small
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_V2_Weights
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    path = weights_file(pretrained, DETECTOR_FILE, allow_download)
    model: Any = fasterrcnn_resnet50_fpn_v2(
        weights=FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1 if path is None else None,
        weights_backbone=None,
        min_size=image_size,
        max_size=max(image_size, max_image_side),
    )
    if path is not None:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes + 1)
    return cast(nn.Module, model)
