"""Single- and multi-label classification of images and texts.

One logit per class; single-label uses softmax and cross-entropy, multi-label uses a sigmoid
head with binary cross-entropy (per-class thresholds are tuned later, on validation, from the
probabilities this task outputs).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lbtrain_trainer.manifest import Example
from lbtrain_trainer.outputs import RowOutput
from lbtrain_trainer.runtime import Runtime
from lbtrain_trainer.tasks.base import Task, TaskContext, load_image_uint8, normalize, to_device


class _Classification(Task):
    def __init__(self, ctx: TaskContext, *, multi: bool) -> None:
        super().__init__(ctx)
        self.multi = multi  # the model type says (lbtrain_trainer.modeltypes._classification)
        self.index = {c: i for i, c in enumerate(self.classes)}

    def targets(self, examples: Sequence[Example]) -> torch.Tensor:
        if self.multi:
            # Filled as Python lists, then one tensor: indexing a tensor element by element
            # costs the worker microseconds a label.
            rows = [[0.0] * len(self.classes) for _ in examples]
            for row, example in zip(rows, examples, strict=True):
                for label in example.labels:
                    row[self.index[label]] = 1.0
            return torch.tensor(rows, dtype=torch.float32)
        return torch.tensor([self.index[e.labels[0]] for e in examples], dtype=torch.long)

    @abc.abstractmethod
    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One logit per class for each row of the batch (on the device)."""

    def loss(self, model: nn.Module, batch: Any, runtime: Runtime) -> torch.Tensor:
        batch = to_device(batch, runtime)
        with runtime.autocast():
            logits = self.logits(model, batch).float()
        if self.multi:
            return F.binary_cross_entropy_with_logits(logits, batch["target"])
        return F.cross_entropy(logits, batch["target"])

    def predict(
        self, model: nn.Module, batch: Any, examples: Sequence[Example], runtime: Runtime
    ) -> list[RowOutput]:
        batch = to_device(batch, runtime)
        with runtime.autocast():
            logits = self.logits(model, batch).float()
        probs = torch.sigmoid(logits) if self.multi else torch.softmax(logits, dim=-1)
        return [
            RowOutput(e.data_row_id, scores=tuple(float(p) for p in row))
            for e, row in zip(examples, probs.cpu(), strict=True)
        ]


class ImageClassificationTask(_Classification):
    channels_last = True

    def build_model(self) -> nn.Module:
        from lbtrain_trainer.models.image_classifier import build_image_classifier

        return build_image_classifier(
            len(self.classes), self.hp.model_size, self.ctx.pretrained, self.ctx.allow_download
        )

    def collate(self, examples: Sequence[Example], train: bool) -> dict[str, torch.Tensor]:
        """A uint8 batch [N, 3, S, S]; the model side converts and normalises on the device."""
        size = self.hp.image_size
        images = []
        for example in examples:
            image = load_image_uint8(self.media_path(example), size)
            if train and torch.rand(()) < 0.5:
                image = image.flip(-1)
            images.append(image)
        return {"images": torch.stack(images), "target": self.targets(examples)}

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        images = normalize(batch["images"])
        if self.channels_last and images.is_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        out: torch.Tensor = model(images)
        return out


class TextClassificationTask(_Classification):
    def __init__(self, ctx: TaskContext, *, multi: bool) -> None:
        super().__init__(ctx, multi=multi)
        from lbtrain_trainer.tasks.text_common import load_encoder

        self.encoder = load_encoder(ctx)

    def build_model(self) -> nn.Module:
        from lbtrain_trainer.models.text import build_text_model

        return build_text_model(
            "sequence",
            len(self.classes),
            self.hp.model_size,
            vocab_size=self.encoder.vocab_size,
            max_length=self.hp.max_length,
            pad_id=self.encoder.pad_id,
            pretrained=self.ctx.pretrained,
            allow_download=self.ctx.allow_download,
        )

    def collate(self, examples: Sequence[Example], train: bool) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask`` (only when a row is padded, see
        :func:`~lbtrain_trainer.tasks.text_common.token_tensors`) and ``target``."""
        from lbtrain_trainer.tasks.text_common import token_tensors

        encoded = self.encoder.encode([self.read_text(e) for e in examples], offsets=False)
        return {**token_tensors(encoded), "target": self.targets(examples)}

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out: torch.Tensor = model(
            input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")
        ).logits
        return out

    def save_extras(self, directory: Path) -> None:
        self.encoder.save(directory / "tokenizer.json")
