"""What a text training batch carries from the loader's workers to the training step.

The step of the production text models is bound by the host (Python and kernel launches), so
whatever the main process does per batch besides the step costs throughput one for one: a
batch holds tensors only (the pin-memory thread walks anything else in Python), and a batch
without padding carries no attention mask (given one, transformers' BERT reads ``mask.all()``
back to the host in every forward pass, a GPU sync, only to drop an all-ones mask). These tests
check the contents and that dropping the mask changes nothing the model computes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lbtrain_trainer.hyperparams import resolve_hyperparameters  # noqa: E402
from lbtrain_trainer.manifest import Example, PreparedDataset  # noqa: E402
from lbtrain_trainer.rows import Entity  # noqa: E402
from lbtrain_trainer.splits import Split  # noqa: E402
from lbtrain_trainer.tasks import make_task  # noqa: E402
from lbtrain_trainer.tasks.base import Task, TaskContext  # noqa: E402
from lbtrain_trainer.text_encoding import TextEncoder, train_wordpiece  # noqa: E402
from lbtrain_trainer.workspace import Workspace  # noqa: E402

LONG = "the quick brown fox jumps over the lazy dog near the river bank today"
SHORT = "a fox"
MAX_LENGTH = 8  # LONG is truncated to it, SHORT is padded


def _task(tmp_path: Path, model_type: str, texts: list[str]) -> Task:
    """A small-model task over ``texts`` (rows labelled in turn "a", "b"; multi-label rows
    alternate between ("a",) and ("a", "b"); NER rows have one entity on their first word)."""
    ws = Workspace(tmp_path)
    train_wordpiece([LONG, SHORT], 200, ws.tokenizer_file)
    examples = []
    for i, text in enumerate(texts):
        media = tmp_path / "media" / f"{i}.txt"
        media.parent.mkdir(parents=True, exist_ok=True)
        media.write_text(text, encoding="utf-8")
        labels: tuple[str, ...] = ("a", "b")[i % 2 :][:1]
        if model_type == "text_multi_classification":
            labels = ("a", "b")[: 1 + i % 2]
        entities = (Entity("a", 0, text.index(" ") - 1),) if model_type == "ner" else ()
        examples.append(
            Example(
                f"row-{i}", None, Split.TRAIN, f"media/{i}.txt", labels=labels, entities=entities
            )
        )
    dataset = PreparedDataset(model_type, "topic", ("a", "b"), examples)
    hp, _ = resolve_hyperparameters(model_type, {"model_size": "small", "max_length": MAX_LENGTH})
    return make_task(TaskContext(dataset, hp, tmp_path))


TEXT_TYPES = ["text_single_classification", "text_multi_classification", "ner"]


@pytest.mark.parametrize("model_type", TEXT_TYPES)
def test_a_training_batch_without_padding_carries_no_attention_mask(tmp_path, model_type):
    task = _task(tmp_path, model_type, [LONG, LONG, LONG])
    batch = task.collate(task.dataset.examples, train=True)
    second = "tags" if model_type == "ner" else "target"
    assert set(batch) == {"input_ids", second}
    assert all(isinstance(v, torch.Tensor) for v in batch.values())
    assert batch["input_ids"].shape == (3, MAX_LENGTH)


@pytest.mark.parametrize("model_type", TEXT_TYPES)
def test_a_padded_training_batch_carries_its_attention_mask(tmp_path, model_type):
    task = _task(tmp_path, model_type, [LONG, SHORT])
    batch = task.collate(task.dataset.examples, train=True)
    assert all(isinstance(v, torch.Tensor) for v in batch.values())
    mask = batch["attention_mask"]
    assert mask.dtype == torch.long and mask[0].all() and not mask[1].all()
    pad_id = TextEncoder.from_file(Workspace(tmp_path).tokenizer_file, MAX_LENGTH).pad_id
    assert torch.equal(mask.bool(), batch["input_ids"] != pad_id)


def test_multi_label_targets_are_one_float_row_per_example(tmp_path):
    task = _task(tmp_path, "text_multi_classification", [LONG, LONG, SHORT])
    target = task.collate(task.dataset.examples, train=True)["target"]
    assert target.dtype == torch.float32
    assert target.tolist() == [[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]]


def test_encoding_without_offsets_gives_the_same_tokens(tmp_path):
    train_wordpiece([LONG, SHORT], 200, tmp_path / "tok.json")
    encoder = TextEncoder.from_file(tmp_path / "tok.json", MAX_LENGTH)
    full, lean = encoder.encode([LONG, SHORT]), encoder.encode([LONG, SHORT], offsets=False)
    assert (lean.ids, lean.attention_mask) == (full.ids, full.attention_mask)
    assert lean.offsets == [] and lean.special == []
    assert len(full.offsets[1]) == MAX_LENGTH


def _models() -> list[Any]:
    from transformers import BertForSequenceClassification, BertForTokenClassification

    from lbtrain_trainer.models.text import MeanPooledClassifier, small_bert_config

    torch.manual_seed(0)
    config = small_bert_config(200, 3, 16, 0)
    return [
        MeanPooledClassifier(config, 3),  # the small sequence classifier
        BertForSequenceClassification(config),  # what a production directory loads
        BertForTokenClassification(config),  # NER, small and production
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["mean-pooled", "sequence", "token"])
def test_no_mask_and_a_mask_of_ones_compute_the_same(index):
    model = _models()[index]
    ids = torch.randint(5, 200, (4, 12))

    def run(mask: Any) -> tuple[Any, list[Any]]:
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids, attention_mask=mask).logits
        logits.square().sum().backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    with_mask, grads_with = run(torch.ones_like(ids))
    without, grads_without = run(None)
    assert torch.equal(with_mask, without)
    assert len(grads_with) == len(grads_without)
    assert all(torch.equal(a, b) for a, b in zip(grads_with, grads_without, strict=True))
