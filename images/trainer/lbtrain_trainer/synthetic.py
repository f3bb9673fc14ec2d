"""Small synthetic Labelbox datasets, one per model type, as model-run export rows.

Tests, the demo and the fake Labelbox need data that looks exactly like a real export
(docs/labelbox.md §5.1-5.2) and that a tiny model learns in seconds on a CPU: coloured shapes for
the image types, templated sentences for the text types. Everything is deterministic in
``seed``. Media either go through ``media_url_for(path, data, content_type) -> url`` (pass
``FakeLabelbox.add_media``) or, without it, images become ``data:`` URIs and text is inline.

Production text models need a pretrained encoder; `save_random_text_encoder` writes a randomly
initialised one in the ``LBTRAIN_PRETRAINED`` layout for tests and benchmarks, offline.
"""

from __future__ import annotations

import base64
import io
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbtrain import contract

MediaUrlFor = Callable[[str, bytes, str], str]

SHAPES = ("circle", "square", "triangle")
SHAPE_COLOURS = {"circle": (220, 40, 40), "square": (40, 200, 60), "triangle": (50, 80, 230)}
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230)}
TOPICS = {
    "sports": [
        "the team won the match",
        "a late goal decided the game",
        "the striker scored twice",
    ],
    "weather": [
        "heavy rain is expected tomorrow",
        "a cold wind blows from the north",
        "sunny skies and warm temperatures",
    ],
    "finance": [
        "stocks fell as markets opened",
        "the bank raised interest rates",
        "investors sold their shares",
    ],
}
PEOPLE = ["Alice Smith", "Bob", "Carmen Diaz", "Deepak", "Erik Larsen", "Fatima"]
CITIES = ["Paris", "New York", "Lagos", "Tokyo", "Lima", "Oslo"]
NER_TEMPLATES = [
    "{person} flew to {city} on Monday.",
    "Yesterday {person} visited {city} with friends.",
    "In {city}, {person} opened a small bakery.",
    "{person} said the trip to {city} was long.",
]
SPLIT_CYCLE = ("training",) * 6 + ("validation", "test") * 2  # 60 / 20 / 20 %


@dataclass(frozen=True)
class SyntheticDataset:
    model_type: str
    rows: list[dict[str, Any]]
    # The feature (classification question) the labels use; objects use per-class names.
    feature_name: str
    classes: tuple[str, ...]


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _draw_shape(
    draw: Any, shape: str, box: tuple[int, int, int, int], fill: tuple[int, ...]
) -> None:
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((left + right) // 2, top), (left, bottom), (right, bottom)], fill=fill)


def _canvas(rng: random.Random, size: int) -> tuple[Any, Any]:
    from PIL import Image, ImageDraw

    base = tuple(rng.randint(0, 40) for _ in range(3))
    image = Image.new("RGB", (size, size), base)
    return image, ImageDraw.Draw(image)


def _jitter(rgb: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    r, g, b = (max(0, min(255, c + rng.randint(-25, 25))) for c in rgb)
    return (r, g, b)


def _media(
    name: str,
    data: bytes,
    content_type: str,
    media_url_for: MediaUrlFor | None,
) -> str:
    if media_url_for is not None:
        return media_url_for(name, data, content_type)
    if content_type.startswith("text/"):
        return data.decode()
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def _object(name: str, extra: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        "feature_id": f"f-{name}",
        "feature_schema_id": f"s-{name}",
        "name": name,
        "value": name,
        "annotation_kind": kind,
        "classifications": [],
        **extra,
    }


def _label_image_single(rng: random.Random, size: int) -> tuple[Any, dict[str, Any], str]:
    image, draw = _canvas(rng, size)
    shape = rng.choice(SHAPES)
    side = rng.randint(size // 3, size // 2)
    left, top = rng.randint(0, size - side), rng.randint(0, size - side)
    _draw_shape(
        draw, shape, (left, top, left + side, top + side), _jitter(SHAPE_COLOURS[shape], rng)
    )
    cls = {
        "name": "shape",
        "value": "shape",
        "feature_id": "f-shape",
        "feature_schema_id": "s-shape",
        "radio_answer": {"name": shape, "value": shape, "classifications": []},
    }
    return image, {"objects": [], "classifications": [cls], "relationships": []}, shape


def _label_image_multi(rng: random.Random, size: int) -> tuple[Any, dict[str, Any], str]:
    image, draw = _canvas(rng, size)
    present = [c for c in COLOURS if rng.random() < 0.5] or [rng.choice(list(COLOURS))]
    cell = size // 2
    cells = rng.sample([(0, 0), (cell, 0), (0, cell), (cell, cell)], len(present))
    for colour, (x, y) in zip(present, cells, strict=True):
        pad = rng.randint(2, cell // 4)
        draw.rectangle(
            (x + pad, y + pad, x + cell - pad, y + cell - pad), fill=_jitter(COLOURS[colour], rng)
        )
    cls = {
        "name": "colours",
        "value": "colours",
        "feature_id": "f-colours",
        "feature_schema_id": "s-colours",
        "checklist_answers": [{"name": c, "value": c, "classifications": []} for c in present],
    }
    return image, {"objects": [], "classifications": [cls], "relationships": []}, ",".join(present)


def _label_boxes(rng: random.Random, size: int) -> tuple[Any, dict[str, Any], str]:
    image, draw = _canvas(rng, size)
    objects: list[dict[str, Any]] = []
    half = size // 2
    slots = rng.sample([(0, 0), (half, 0), (0, half), (half, half)], rng.randint(1, 2))
    for x0, y0 in slots:
        shape = rng.choice(("circle", "square"))
        side = rng.randint(half * 5 // 8, half - 2)
        left, top = x0 + rng.randint(0, half - side), y0 + rng.randint(0, half - side)
        _draw_shape(
            draw,
            shape,
            (left, top, left + side - 1, top + side - 1),
            _jitter(SHAPE_COLOURS[shape], rng),
        )
        bbox = {"top": float(top), "left": float(left), "height": float(side), "width": float(side)}
        objects.append(_object(shape, {"bounding_box": bbox}, "ImageBoundingBox"))
    return image, {"objects": objects, "classifications": [], "relationships": []}, ""


def _text_single(rng: random.Random) -> tuple[str, dict[str, Any]]:
    topic = rng.choice(list(TOPICS))
    text = f"{rng.choice(TOPICS[topic])} {rng.choice(['today', 'again', 'this week', ''])}".strip()
    cls = {
        "name": "topic",
        "value": "topic",
        "feature_id": "f-topic",
        "feature_schema_id": "s-topic",
        "radio_answer": {"name": topic, "value": topic, "classifications": []},
    }
    return text + ".", {"objects": [], "classifications": [cls], "relationships": []}


def _text_multi(rng: random.Random) -> tuple[str, dict[str, Any]]:
    topics = rng.sample(list(TOPICS), rng.choice((1, 1, 2)))
    text = " and ".join(rng.choice(TOPICS[t]) for t in topics) + "."
    cls = {
        "name": "topics",
        "value": "topics",
        "feature_id": "f-topics",
        "feature_schema_id": "s-topics",
        "checklist_answers": [{"name": t, "value": t, "classifications": []} for t in topics],
    }
    return text, {"objects": [], "classifications": [cls], "relationships": []}


def _ner(rng: random.Random) -> tuple[str, dict[str, Any]]:
    template = rng.choice(NER_TEMPLATES)
    person, city = rng.choice(PEOPLE), rng.choice(CITIES)
    text = template.format(person=person, city=city)
    objects = []
    for name, token in (("person", person), ("city", city)):
        start = text.index(token)
        loc = {"start": start, "end": start + len(token) - 1, "token": token}  # inclusive end
        objects.append(_object(name, {"location": loc}, "TextEntity"))
    return text, {"objects": objects, "classifications": [], "relationships": []}


def make_dataset(
    model_type: str,
    n_rows: int,
    *,
    media_url_for: MediaUrlFor | None = None,
    model_id: str = "model-1",
    model_run_id: str = "mr-1",
    seed: int = 0,
    image_size: int = 64,
    assign_splits: bool = True,
) -> SyntheticDataset:
    """Make ``n_rows`` export rows for ``model_type`` (one of ``contract.MODEL_TYPES``).

    With ``assign_splits`` the rows carry a 60/20/20 train/validation/test split on the run
    object (``"split": "training"``...); without, they are unassigned and the trainer hashes.
    """
    model_type = model_type.lower()
    if model_type not in contract.MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r}")
    rng = random.Random(f"{model_type}:{seed}")
    prefix = f"synthetic/{model_run_id}/{model_type}-{seed}-{image_size}"  # unique media paths
    rows: list[dict[str, Any]] = []
    is_image = model_type in (
        "bounding_box",
        "image_single_classification",
        "image_multi_classification",
    )
    for i in range(n_rows):
        if is_image:
            make = {
                "bounding_box": _label_boxes,
                "image_single_classification": _label_image_single,
                "image_multi_classification": _label_image_multi,
            }[model_type]
            image, annotations, _ = make(rng, image_size)
            row_data = _media(f"{prefix}/{i:05d}.png", _png(image), "image/png", media_url_for)
            attributes = {"width": image_size, "height": image_size, "mime_type": "image/png"}
        else:
            text_make = {
                "ner": _ner,
                "text_single_classification": _text_single,
                "text_multi_classification": _text_multi,
            }[model_type]
            text, annotations = text_make(rng)
            row_data = _media(f"{prefix}/{i:05d}.txt", text.encode(), "text/plain", media_url_for)
            attributes = {"mime_type": "text/plain"}
        run: dict[str, Any] = {
            "name": "synthetic run",
            "run_data_row_id": f"rdr-{model_run_id}-{i:05d}",
            "labels": [
                {
                    "label_kind": "Default",
                    "version": "1.0.0",
                    "id": f"lbl-{i:05d}",
                    "annotations": annotations,
                }
            ],
            "predictions": [],
        }
        if assign_splits:
            run["split"] = SPLIT_CYCLE[i % len(SPLIT_CYCLE)]
        rows.append(
            {
                "data_row": {
                    "id": f"dr-{model_type[:4]}-{seed}-{i:05d}",
                    "global_key": f"gk-{model_type}-{seed}-{i:05d}",
                    "row_data": row_data,
                    "external_id": f"{model_type}-{i:05d}",
                },
                "media_attributes": attributes,
                "experiments": {model_id: {"name": "synthetic model", "runs": {model_run_id: run}}},
            }
        )
    feature, classes = {
        "bounding_box": ("", ("circle", "square")),
        "ner": ("", ("city", "person")),
        "image_single_classification": ("shape", tuple(sorted(SHAPES))),
        "image_multi_classification": ("colours", tuple(sorted(COLOURS))),
        "text_single_classification": ("topic", tuple(sorted(TOPICS))),
        "text_multi_classification": ("topics", tuple(sorted(TOPICS))),
    }[model_type]
    return SyntheticDataset(model_type, rows, feature, classes)


def save_random_text_encoder(
    directory: Path,
    texts: Sequence[str],
    wordpiece_vocab: int,
    *,
    min_model_vocab: int = 0,
    **bert_config: Any,
) -> None:
    """A BERT encoder with random weights and a WordPiece tokenizer trained on `texts`, saved
    as a transformers model directory (what ``text-encoder/`` under ``LBTRAIN_PRETRAINED``
    holds). `bert_config` sets the network's shape (``BertConfig``'s defaults: BERT-base);
    the model's vocabulary is the tokenizer's, or `min_model_vocab` if that is larger."""
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from lbtrain_trainer.text_encoding import train_wordpiece

    directory.mkdir(parents=True, exist_ok=True)
    # The raw tokenizers file is only a step towards the transformers one: it goes to a scratch
    # folder, so a pretrained root (e.g. the image's) holds nothing the trainer does not read.
    with tempfile.TemporaryDirectory(prefix="wordpiece-") as scratch:
        wordpiece = Path(scratch) / "wordpiece.json"
        train_wordpiece(texts, wordpiece_vocab, wordpiece)
        tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
            tokenizer_file=str(wordpiece),
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
        )
    tokenizer.save_pretrained(directory)
    config = BertConfig(vocab_size=max(min_model_vocab, tokenizer.vocab_size), **bert_config)
    BertModel(config).save_pretrained(directory)
