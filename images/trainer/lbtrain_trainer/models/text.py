"""Text models: a 2-layer BERT built from a config (no download) or a pretrained encoder.

Sequence classification (single and multi label share the network; the task picks softmax or
sigmoid) and token classification (NER). Small models get their vocabulary from the WordPiece
tokenizer that ``prepare`` trained on the data; production models load a transformers model
directory with a new head of the right size.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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
        BertForSequenceClassification,
        BertForTokenClassification,
    )

    if model_size == "small":
        config = small_bert_config(vocab_size, num_labels, max_length, pad_id)
        cls = BertForSequenceClassification if kind == "sequence" else BertForTokenClassification
        model: nn.Module = cls(config)
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
