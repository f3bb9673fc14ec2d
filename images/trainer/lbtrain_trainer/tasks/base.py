"""The task interface and the helpers tasks share (media loading, batching to a device)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lbtrain_trainer.hyperparams import Hyperparameters
from lbtrain_trainer.manifest import Example, PreparedDataset
from lbtrain_trainer.media import read_media_text
from lbtrain_trainer.outputs import RowOutput
from lbtrain_trainer.runtime import Runtime

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TaskContext:
    dataset: PreparedDataset
    hp: Hyperparameters
    workspace: Path
    pretrained: Path | None = None
    allow_download: bool = False


def load_image(path: Path) -> torch.Tensor:
    """An RGB image file as a float tensor [3, H, W] in [0, 1]."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def load_image_uint8(path: Path, size: int) -> torch.Tensor:
    """An RGB image file resized to ``size`` x ``size`` as a uint8 tensor [3, size, size].

    PIL's resize filters with a support scaled to the reduction (antialiasing) in uint8, which
    costs a worker less than resizing floats, and a uint8 batch is a quarter of the bytes to pin
    and copy to the GPU; :func:`normalize` converts it to float on the device.
    """
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        array = np.asarray(rgb, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of a float batch in [0, 1] or a uint8 batch in [0, 255]."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


class Task(abc.ABC):
    """What differs between model types; the train loop calls these."""

    channels_last = False  # CNNs run faster in NHWC on tensor cores
    autocast = True  # runs its forward passes under the runtime's bf16 autocast (on CUDA)

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.dataset = ctx.dataset
        self.hp = ctx.hp
        self.classes = ctx.dataset.classes

    def media_path(self, example: Example) -> Path:
        return self.ctx.workspace / example.media

    def read_text(self, example: Example) -> str:
        return read_media_text(self.media_path(example))

    @abc.abstractmethod
    def build_model(self) -> nn.Module: ...

    @abc.abstractmethod
    def collate(self, examples: Sequence[Example], train: bool) -> Any:
        """Turn examples into a CPU batch (runs in DataLoader workers)."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: Any, runtime: Runtime) -> torch.Tensor: ...

    @abc.abstractmethod
    def predict(
        self, model: nn.Module, batch: Any, examples: Sequence[Example], runtime: Runtime
    ) -> list[RowOutput]:
        """Outputs for ``examples`` (the batch was collated from them with train=False)."""

    def save_extras(self, directory: Path) -> None:  # noqa: B027 (optional hook)
        """Write what inference needs besides the weights (e.g. the tokenizer)."""

    def describe(self) -> dict[str, Any]:
        """What identifies the network, for checkpoint compatibility and the model card."""
        return {
            "model_type": self.dataset.model_type,
            "model_size": self.hp.model_size,
            "classes": list(self.classes),
            "feature_name": self.dataset.feature_name,
        }


def to_device(tensors: dict[str, torch.Tensor], runtime: Runtime) -> dict[str, torch.Tensor]:
    return {k: v.to(runtime.device, non_blocking=True) for k, v in tensors.items()}
