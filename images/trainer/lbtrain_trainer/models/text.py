"""Text models: a 2-layer BERT built from a config (no download) or a pretrained encoder.

Sequence classification (single and multi label share the network; the task picks softmax or
sigmoid) and token classification (NER). Small models get their vocabulary from the WordPiece
tokenizer that ``prepare`` built from the data, and the small sequence classifier pools the mean
of the token states; production models load a transformers model directory with a new head of
the right size.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lbtrain_trainer.models.pretrained import text_model_dir

if TYPE_CHECKING:
    from transformers import BertConfig


def small_bert_config(vocab_size: int, num_labels: int, max_length: int, pad_id: int) -> BertConfig:
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=max(64, max_length + 2),
        pad_token_id=pad_id,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    config.num_labels = num_labels
    return config


class MeanPooledClassifier(nn.Module):
    """The small sequence classifier: a BERT encoder, the mean of its token states, a linear
    head. ``BertForSequenceClassification`` reads the [CLS] state through a tanh pooler; from
    scratch on a few dozen rows that sometimes stalls with two classes merged (one seed in
    four stopped at 0.65 test accuracy on the synthetic topics), while the mean of the token
    states hands every word's gradient straight to the head."""

    def __init__(self, config: BertConfig, num_labels: int) -> None:
        from transformers import BertModel

        super().__init__()
        self.bert = BertModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Any:
        """Without ``attention_mask`` every token counts (as with a mask of ones)."""
        from transformers.modeling_outputs import SequenceClassifierOutput

        states = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if attention_mask is None:
            mask = torch.ones((*states.shape[:2], 1), dtype=states.dtype, device=states.device)
        else:
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return SequenceClassifierOutput(logits=self.classifier(pooled))


def build_text_model(
    kind: str,
    num_labels: int,
    model_size: str,
    *,
    vocab_size: int,
    max_length: int,
    pad_id: int,
    pretrained: Path | None,
    allow_download: bool,
) -> nn.Module:
    """``kind`` is "sequence" or "token"."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        BertForTokenClassification,
    )

    if model_size == "small":
        config = small_bert_config(vocab_size, num_labels, max_length, pad_id)
        if kind == "sequence":
            return MeanPooledClassifier(config, num_labels)
        model: nn.Module = BertForTokenClassification(config)
        return model
    auto = (
        AutoModelForSequenceClassification
        if kind == "sequence"
        else AutoModelForTokenClassification
    )
    pretrained_model: nn.Module = auto.from_pretrained(
        text_model_dir(pretrained, allow_download),
        num_labels=num_labels,
        ignore_mismatched_sizes=True,
        local_files_only=not allow_download,
    )
    return pretrained_model
