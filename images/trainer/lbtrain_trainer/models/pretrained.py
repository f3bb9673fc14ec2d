"""Find pretrained weights under ``LBTRAIN_PRETRAINED``; never reach a hub unless allowed.

``LBTRAIN_PRETRAINED`` is a directory (baked into the image at ``/opt/lbtrain/pretrained`` or a
mounted volume) holding, by convention:

========================================  ==============================================
``convnext_tiny.pth``                     torchvision ConvNeXt-T ImageNet state dict
``fasterrcnn_resnet50_fpn_v2.pth``        torchvision Faster R-CNN v2 COCO state dict
``text-encoder/``                         a transformers model directory with a fast
                                          tokenizer (``config.json``, weights, ``tokenizer.json``)
========================================  ==============================================

It may also point straight at one file or one model directory. Without weights a production
model refuses to start (training ConvNeXt or BERT from scratch on a labelling project's data
would silently give a useless model), unless hub downloads are allowed.
"""

from __future__ import annotations

from pathlib import Path

from lbtrain import contract
from lbtrain_trainer.errors import ConfigError

CONVNEXT_FILE = "convnext_tiny.pth"
DETECTOR_FILE = "fasterrcnn_resnet50_fpn_v2.pth"
TEXT_DIR = "text-encoder"
HUB_TEXT_MODEL = "bert-base-uncased"


def weights_file(root: Path | None, name: str, allow_download: bool) -> Path | None:
    """The state-dict file ``name`` under ``root``; ``None`` means "download" (if allowed)."""
    if root is not None:
        if root.is_file():
            return root
        if (root / name).is_file():
            return root / name
    if allow_download:
        return None
    raise ConfigError(
        f"production model needs pretrained weights: put {name} in the directory named by "
        f"{contract.ENV_PRETRAINED} (now {root or 'unset'}), or set model_size=small, or set "
        f"{contract.ENV_ALLOW_HUB_DOWNLOAD}=true"
    )


def text_model_dir(root: Path | None, allow_download: bool) -> str:
    """A transformers model directory (or, when downloads are allowed, a hub model id)."""
    if root is not None:
        for candidate in (root, root / TEXT_DIR):
            if (candidate / "config.json").is_file():
                return str(candidate)
    if allow_download:
        return HUB_TEXT_MODEL
    raise ConfigError(
        f"production text model needs a transformers model directory: put it at "
        f"{TEXT_DIR}/ in the directory named by {contract.ENV_PRETRAINED} (now "
        f"{root or 'unset'}), or set model_size=small, or set "
        f"{contract.ENV_ALLOW_HUB_DOWNLOAD}=true"
    )
