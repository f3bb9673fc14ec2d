"""Image classifiers: a small CNN for CPU tests, ConvNeXt-T for production.

Both output one logit per class; the task applies softmax (single) or sigmoid (multi), so the
same network serves both classification flavours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from lbtrain_trainer.models.pretrained import CONVNEXT_FILE, weights_file


class SmallCNN(nn.Module):
    """Four strided conv blocks and a linear head: learns coloured shapes at 64 px in seconds."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for out in (width, width * 2, width * 4, width * 4):
            layers += [
                nn.Conv2d(channels, out, 3, stride=2, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.features(images).mean(dim=(2, 3))
        logits: torch.Tensor = self.head(features)
        return logits


def build_image_classifier(
    num_classes: int, model_size: str, pretrained: Path | None, allow_download: bool
) -> nn.Module:
    if model_size == "small":
        return SmallCNN(num_classes)
    from torchvision.models import ConvNeXt_Tiny_Weights, convnext_tiny

    path = weights_file(pretrained, CONVNEXT_FILE, allow_download)
    model: Any = convnext_tiny(
        weights=ConvNeXt_Tiny_Weights.IMAGENET1K_V1 if path is None else None
    )
    if path is not None:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    last = model.classifier[-1]
    model.classifier[-1] = nn.Linear(last.in_features, num_classes)
    return cast(nn.Module, model)
