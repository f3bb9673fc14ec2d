"""Small synthetic Labelbox datasets, one per model type, as model-run export rows.

Tests, the demo and the fake Labelbox need data that looks exactly like a real export
(docs/labelbox.md §5.1-5.2) and that a tiny model learns in seconds on a CPU: coloured shapes for
the image types, templated sentences for the text types. Each model type draws its own rows
(``ModelType.synthetic_label`` in :mod:`lbtrain_trainer.modeltypes`) from the vocabulary and
drawing helpers here, so a plugin's type gets a dataset the same way. Everything is
deterministic in ``seed``. Media either go through ``media_url_for(path, data, content_type) ->
url`` (pass ``FakeLabelbox.add_media``) or, without it, images become ``data:`` URIs and text is
inline.

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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lbtrain_trainer.modeltypes.base import SyntheticLabel


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


def png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def draw_shape(
    draw: Any, shape: str, box: tuple[int, int, int, int], fill: tuple[int, ...]
) -> None:
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((left + right) // 2, top), (left, bottom), (right, bottom)], fill=fill)


def canvas(rng: random.Random, size: int) -> tuple[Any, Any]:
    from PIL import Image, ImageDraw

    base = tuple(rng.randint(0, 40) for _ in range(3))
    image = Image.new("RGB", (size, size), base)
    return image, ImageDraw.Draw(image)


def jitter(rgb: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
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


def annotation_object(name: str, extra: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        "feature_id": f"f-{name}",
        "feature_schema_id": f"s-{name}",
        "name": name,
        "value": name,
        "annotation_kind": kind,
        "classifications": [],
        **extra,
    }


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
    """Make ``n_rows`` export rows for ``model_type`` (any registered type: each draws its own
    rows, :meth:`~lbtrain_trainer.modeltypes.base.ModelType.synthetic_label`).

    With ``assign_splits`` the rows carry a 60/20/20 train/validation/test split on the run
    object (``"split": "training"``...); without, they are unassigned and the trainer hashes.
    """
    from lbtrain_trainer.modeltypes import registry

    kind = registry.get(model_type)
    model_type = kind.name
    rng = random.Random(f"{model_type}:{seed}")
    prefix = f"synthetic/{model_run_id}/{model_type}-{seed}-{image_size}"  # unique media paths
    rows: list[dict[str, Any]] = []
    suffix = {"image/png": "png", "text/plain": "txt"}
    for i in range(n_rows):
        label = kind.synthetic_label(rng=rng, image_size=image_size)
        name = f"{prefix}/{i:05d}.{suffix.get(label.content_type, 'bin')}"
        row_data = _media(name, label.media, label.content_type, media_url_for)
        annotations = label.annotations
        attributes: dict[str, Any] = {"mime_type": label.content_type}
        if label.width is not None and label.height is not None:
            attributes = {"width": label.width, "height": label.height, **attributes}
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
    feature, classes = kind.synthetic_feature, kind.synthetic_classes
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


def image_label(image: Any, annotations: dict[str, Any], size: int) -> SyntheticLabel:
    """A drawn image (PIL) and its annotations as a :class:`SyntheticLabel` (PNG)."""
    from lbtrain_trainer.modeltypes.base import SyntheticLabel

    return SyntheticLabel(png(image), "image/png", annotations, width=size, height=size)


def text_label(text: str, annotations: dict[str, Any]) -> SyntheticLabel:
    """A text and its annotations as a :class:`SyntheticLabel` (UTF-8)."""
    from lbtrain_trainer.modeltypes.base import SyntheticLabel

    return SyntheticLabel(text.encode(), "text/plain", annotations)
