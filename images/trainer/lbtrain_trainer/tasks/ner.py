"""Named-entity recognition as BIO token classification over a fast tokenizer's offsets.

Ground truth spans (inclusive ends) become per-token tags through the offset mapping, and
predicted tags become spans again, with a confidence (the mean probability of the entity's
tokens). Texts longer than ``max_length`` tokens are truncated: entities past the cut are
neither learned nor predicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lbtrain_trainer.manifest import Example
from lbtrain_trainer.ner_tags import IGNORE, num_tags, spans_to_tags, tags_to_spans
from lbtrain_trainer.outputs import RowOutput
from lbtrain_trainer.runtime import Runtime
from lbtrain_trainer.tasks.base import Task, TaskContext, to_device
from lbtrain_trainer.tasks.text_common import load_encoder, token_tensors


class NerTask(Task):
    def __init__(self, ctx: TaskContext) -> None:
        super().__init__(ctx)
        self.encoder = load_encoder(ctx)

    def build_model(self) -> nn.Module:
        from lbtrain_trainer.models.text import build_text_model

        return build_text_model(
            "token",
            num_tags(len(self.classes)),
            self.hp.model_size,
            vocab_size=self.encoder.vocab_size,
            max_length=self.hp.max_length,
            pad_id=self.encoder.pad_id,
            pretrained=self.ctx.pretrained,
            allow_download=self.ctx.allow_download,
        )

    def collate(self, examples: Sequence[Example], train: bool) -> dict[str, Any]:
        encoded = self.encoder.encode([self.read_text(e) for e in examples])
        tags = [
            spans_to_tags(
                offsets, special, [(n.name, n.start, n.end) for n in e.entities], self.classes
            )
            for e, offsets, special in zip(examples, encoded.offsets, encoded.special, strict=True)
        ]
        batch: dict[str, Any] = {
            **token_tensors(encoded),  # attention_mask only when a row is padded
            "tags": torch.tensor(tags, dtype=torch.long),
        }
        if not train:
            # Only prediction needs the offsets. In a training batch these Python lists cost
            # the loader's pin-memory thread ~30 ms of GIL-holding traversal per batch of 32,
            # which starved the training loop (an H100 ran NER at 0.57 of its step ceiling).
            batch["offsets"] = encoded.offsets
            batch["special"] = encoded.special
        return batch

    def _logits(self, model: nn.Module, batch: dict[str, Any], runtime: Runtime) -> torch.Tensor:
        keys = ("input_ids", "attention_mask", "tags")
        tensors = to_device({k: batch[k] for k in keys if k in batch}, runtime)
        batch.update(tensors)
        with runtime.autocast():
            out: torch.Tensor = model(
                input_ids=tensors["input_ids"], attention_mask=tensors.get("attention_mask")
            ).logits
        return out.float()

    def loss(self, model: nn.Module, batch: Any, runtime: Runtime) -> torch.Tensor:
        logits = self._logits(model, batch, runtime)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch["tags"].reshape(-1), ignore_index=IGNORE
        )

    def predict(
        self, model: nn.Module, batch: Any, examples: Sequence[Example], runtime: Runtime
    ) -> list[RowOutput]:
        probs = torch.softmax(self._logits(model, batch, runtime), dim=-1).cpu()
        confidence, tags = probs.max(dim=-1)
        outputs = []
        for i, example in enumerate(examples):
            spans = tags_to_spans(
                batch["offsets"][i],
                batch["special"][i],
                tags[i].tolist(),
                confidence[i].tolist(),
                self.classes,
            )
            outputs.append(RowOutput(example.data_row_id, spans=tuple(spans)))
        return outputs

    def save_extras(self, directory: Path) -> None:
        self.encoder.save(directory / "tokenizer.json")
