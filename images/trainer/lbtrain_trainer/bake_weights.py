"""Fill a pretrained-weights directory for the production models (real ones need network, once).

The trainer never downloads weights at run time: a deployment bakes them into the image
(``docker build --build-arg BAKE_WEIGHTS=1``, which runs this module) or mounts a volume that
this module filled, and points ``LBTRAIN_PRETRAINED`` at it. The layout is the one
:mod:`lbtrain_trainer.models.pretrained` reads::

    python -m lbtrain_trainer.bake_weights /opt/lbtrain/pretrained --text-model bert-base-uncased

``--stand-in`` (``BAKE_WEIGHTS=stand-in``) writes the same files without any network: the
production architectures with random weights, and a marker file saying so. Tests where no hub
is reachable use it to run the production path (the image's layout, the trainer's resolver,
the real network shapes) end to end; a model trained from it is useless.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lbtrain_trainer.models.pretrained import (
    CONVNEXT_FILE,
    DETECTOR_FILE,
    HUB_TEXT_MODEL,
    STAND_IN_MARKER,
    TEXT_DIR,
)

# bert-base-uncased's vocabulary size: the stand-in encoder has its embedding shape (and
# BertConfig's defaults give it the rest of BERT-base), so memory and speed match production.
BERT_BASE_VOCAB = 30522
STAND_IN_WORDPIECE = 2000
STAND_IN_SEED = 0


def bake(root: Path, text_model: str) -> None:
    """The real pretrained weights, from torchvision's and Hugging Face's hubs."""
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


def stand_in_texts() -> list[str]:
    """Sentences for the stand-in tokenizer: the synthetic datasets' words, so that test runs
    on that data see real tokens rather than a stream of [UNK]."""
    from lbtrain_trainer import synthetic

    topics = [sentence for sentences in synthetic.TOPICS.values() for sentence in sentences]
    entities = [
        template.format(person=person, city=city)
        for template in synthetic.NER_TEMPLATES
        for person in synthetic.PEOPLE
        for city in synthetic.CITIES
    ]
    return topics + entities


def bake_stand_in(root: Path, text_model: str) -> None:
    """Randomly initialised production networks in the same layout, and the marker file."""
    import torch
    from torchvision.models import convnext_tiny
    from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

    from lbtrain_trainer.synthetic import save_random_text_encoder

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(STAND_IN_SEED)  # the same bytes on every build of the same versions
    torch.save(convnext_tiny(weights=None).state_dict(), root / CONVNEXT_FILE)
    detector = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None)
    torch.save(detector.state_dict(), root / DETECTOR_FILE)
    save_random_text_encoder(
        root / TEXT_DIR, stand_in_texts(), STAND_IN_WORDPIECE, min_model_vocab=BERT_BASE_VOCAB
    )
    (root / STAND_IN_MARKER).write_text(stand_in_notice(text_model), encoding="utf-8")


def stand_in_notice(text_model: str) -> str:
    return (
        "STAND-IN WEIGHTS FOR TESTS: every file in this directory holds randomly initialised\n"
        "weights (written by `python -m lbtrain_trainer.bake_weights --stand-in`), not\n"
        "pretrained ones. They have the production architectures and the layout the trainer\n"
        f"reads ({CONVNEXT_FILE}: torchvision ConvNeXt-T; {DETECTOR_FILE}: torchvision\n"
        f"Faster R-CNN ResNet-50 FPN v2; {TEXT_DIR}/: a BERT-base-shaped encoder standing in\n"
        f"for {text_model}, with a WordPiece tokenizer of the synthetic test data's words),\n"
        "so the production path can be tested without any network. A model trained from\n"
        "them is useless: build the image with BAKE_WEIGHTS=1 or mount real weights.\n"
    )


def make_readable(root: Path) -> None:
    """Let every user read what was baked: the image runs the trainer as a non-root user, and
    some writers (transformers' safetensors) create their files with mode 0600."""
    for path in [root, *root.rglob("*")]:
        extra = 0o555 if path.is_dir() else 0o444
        path.chmod(path.stat().st_mode | extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--text-model",
        default=HUB_TEXT_MODEL,
        help="a transformers model with a fast tokenizer",
    )
    parser.add_argument(
        "--stand-in",
        action="store_true",
        help="random weights of the production architectures, for tests (no network)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.stand_in:
        bake_stand_in(args.directory, args.text_model)
    else:
        bake(args.directory, args.text_model)
    make_readable(args.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
