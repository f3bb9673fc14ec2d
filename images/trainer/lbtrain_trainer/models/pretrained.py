"""Find pretrained weights under ``LBTRAIN_PRETRAINED``; never reach a hub unless allowed.

``LBTRAIN_PRETRAINED`` is a directory (baked into the image at ``/opt/lbtrain/pretrained`` or a
mounted volume) holding, by convention:

========================================  ==============================================
``convnext_tiny.pth``                     torchvision ConvNeXt-T ImageNet state dict
``fasterrcnn_resnet50_fpn_v2.pth``        torchvision Faster R-CNN v2 COCO state dict
``text-encoder/``                         a transformers model directory with a fast
                                          tokenizer (``config.json``, weights, ``tokenizer.json``)
``STAND-IN-WEIGHTS.txt``                  only in a test image: the files above are random
                                          (``bake_weights --stand-in``), useless for training
========================================  ==============================================

It may also point straight at one file or one model directory. Without weights a production
model refuses to start (training ConvNeXt or BERT from scratch on a labelling project's data
would silently give a useless model), unless hub downloads are allowed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lbtrain import contract
from lbtrain_trainer.errors import ConfigError

CONVNEXT_FILE = "convnext_tiny.pth"
DETECTOR_FILE = "fasterrcnn_resnet50_fpn_v2.pth"
TEXT_DIR = "text-encoder"
HUB_TEXT_MODEL = "bert-base-uncased"
STAND_IN_MARKER = "STAND-IN-WEIGHTS.txt"

log = logging.getLogger(__name__)


def _found(path: Path) -> Path:
    """`path`, after a warning if it is a test image's random stand-in: such a run trains
    nothing useful, and whoever reads the log should learn why."""
    if any((folder / STAND_IN_MARKER).is_file() for folder in (path.parent, path.parent.parent)):
        log.warning(
            "%s holds stand-in (randomly initialised) weights for tests, not pretrained ones: "
            "the model will be useless; see %s next to it",
            path,
            STAND_IN_MARKER,
        )
    return path


def weights_file(root: Path | None, name: str, allow_download: bool) -> Path | None:
    """The state-dict file ``name`` under ``root``; ``None`` means "download" (if allowed)."""
    if root is not None:
        if root.is_file():
            return _found(root)
        if (root / name).is_file():
            return _found(root / name)
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
                return str(_found(candidate / "config.json").parent)
    if allow_download:
        return HUB_TEXT_MODEL
    raise ConfigError(
        f"production text model needs a transformers model directory: put it at "
        f"{TEXT_DIR}/ in the directory named by {contract.ENV_PRETRAINED} (now "
        f"{root or 'unset'}), or set model_size=small, or set "
        f"{contract.ENV_ALLOW_HUB_DOWNLOAD}=true"
    )
