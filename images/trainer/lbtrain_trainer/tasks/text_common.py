"""What the text tasks share: the encoder (the workspace's trained WordPiece, or the pretrained
one) and the token tensors of a batch."""

from __future__ import annotations

import torch

from lbtrain_trainer.models.pretrained import text_model_dir
from lbtrain_trainer.tasks.base import TaskContext
from lbtrain_trainer.text_encoding import Encoded, TextEncoder
from lbtrain_trainer.workspace import Workspace


def load_encoder(ctx: TaskContext) -> TextEncoder:
    if ctx.hp.model_size == "small":
        ws = Workspace(ctx.workspace)
        return TextEncoder.from_file(ws.require(ws.tokenizer_file, "prepare"), ctx.hp.max_length)
    from pathlib import Path

    directory = text_model_dir(ctx.pretrained, ctx.allow_download)
    return TextEncoder.from_pretrained(Path(directory), ctx.hp.max_length, ctx.allow_download)


def token_tensors(encoded: Encoded) -> dict[str, torch.Tensor]:
    """``input_ids`` [N, L], and ``attention_mask`` [N, L] only when some row is padded.

    Given a mask, transformers' BERT asks whether it is all ones (``mask.all()`` read on the
    host: a GPU sync in every forward pass) and, if it is, drops it. A batch of texts that all
    fill ``max_length`` therefore goes without one: the same attention, no per-step sync, and
    one tensor fewer for the loader to pass from its worker, pin and copy. Read it back with
    ``batch.get("attention_mask")``.
    """
    batch = {"input_ids": torch.tensor(encoded.ids, dtype=torch.long)}
    mask = torch.tensor(encoded.attention_mask, dtype=torch.long)
    if not bool(mask.all()):
        batch["attention_mask"] = mask
    return batch
