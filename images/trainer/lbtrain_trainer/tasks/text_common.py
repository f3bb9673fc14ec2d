"""The text encoder a text task uses: the workspace's trained WordPiece, or the pretrained one."""

from __future__ import annotations

from lbtrain_trainer.models.pretrained import text_model_dir
from lbtrain_trainer.tasks.base import TaskContext
from lbtrain_trainer.text_encoding import TextEncoder
from lbtrain_trainer.workspace import Workspace


def load_encoder(ctx: TaskContext) -> TextEncoder:
    if ctx.hp.model_size == "small":
        ws = Workspace(ctx.workspace)
        return TextEncoder.from_file(ws.require(ws.tokenizer_file, "prepare"), ctx.hp.max_length)
    from pathlib import Path

    directory = text_model_dir(ctx.pretrained, ctx.allow_download)
    return TextEncoder.from_pretrained(Path(directory), ctx.hp.max_length, ctx.allow_download)
