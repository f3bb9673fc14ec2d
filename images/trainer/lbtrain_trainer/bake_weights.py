"""Fill a pretrained-weights directory for the production models (needs network, once).

The trainer never downloads weights at run time: a deployment bakes them into the image
(``docker build --build-arg BAKE_WEIGHTS=1``, which runs this module) or mounts a volume that
this module filled, and points ``LBTRAIN_PRETRAINED`` at it. The layout is the one
:mod:`lbtrain_trainer.models.pretrained` reads::

    python -m lbtrain_trainer.bake_weights /opt/lbtrain/pretrained --text-model bert-base-uncased
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lbtrain_trainer.models.pretrained import CONVNEXT_FILE, DETECTOR_FILE, TEXT_DIR


def bake(root: Path, text_model: str) -> None:
    import torch
    from torchvision.models import ConvNeXt_Tiny_Weights
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_V2_Weights
    from transformers import AutoModel, AutoTokenizer

    root.mkdir(parents=True, exist_ok=True)
    torch.save(
        ConvNeXt_Tiny_Weights.IMAGENET1K_V1.get_state_dict(progress=False), root / CONVNEXT_FILE
    )
    torch.save(
        FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1.get_state_dict(progress=False),
        root / DETECTOR_FILE,
    )
    AutoModel.from_pretrained(text_model).save_pretrained(root / TEXT_DIR)
    tokenizer = AutoTokenizer.from_pretrained(text_model, use_fast=True)
    tokenizer.save_pretrained(root / TEXT_DIR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--text-model",
        default="bert-base-uncased",
        help="a transformers model with a fast tokenizer",
    )
    args = parser.parse_args(argv)
    bake(args.directory, args.text_model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
