"""Parse Labelbox model run export rows into the little the trainer needs.

An export row (docs/labelbox.md §5.1) holds the data row (``id``, ``global_key``, ``row_data``) and,
under ``experiments.<model_id>.runs.<model_run_id>``, the run's labels and split. Each label
holds ``annotations.objects`` (bounding boxes, NER entities) and ``annotations.classifications``
(radio and checklist answers). This module turns one row into an :class:`ExportRow` without
judging it; :mod:`lbtrain_trainer.prepare` decides whether the data can train.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lbtrain_trainer.errors import BadInputError
from lbtrain_trainer.splits import Split, split_from_run

# The kinds of classification answer a model type can learn (its ``answer_kind``) ...
ClassificationKind = Literal["radio", "checklist"]
# ... and every kind an export's classification can have: "text" is a free-text answer, read
# only so that ``prepare`` can say a question is of the wrong kind for the model type.
QuestionKind = Literal["radio", "checklist", "text"]
# The keys of the annotation objects this parser reads (docs/labelbox.md §5.1): an export's own
# field names, whatever model type is trained (a type reads any other kind from the raw
# ``ExportRow.objects``).
BOX_KEY = "bounding_box"
ENTITY_KEY = "location"
# The geometry keys of export objects, to name an object's kind (polygons in a box run...).
GEOMETRY_KEYS = (BOX_KEY, "polygon", "line", "point", "mask", ENTITY_KEY)


@dataclass(frozen=True)
class Box:
    """A bounding box in pixels of the original image (Labelbox's top/left/height/width)."""

    name: str
    left: float
    top: float
    width: float
    height: float


@dataclass(frozen=True)
class Entity:
    """A text entity; ``end`` is **inclusive**, as in Labelbox (docs/labelbox.md §5.5)."""

    name: str
    start: int
    end: int
    token: str | None = None


@dataclass(frozen=True)
class Classification:
    name: str
    kind: QuestionKind
    answers: tuple[str, ...]  # a free-text answer's text, for "text"


@dataclass(frozen=True)
class ExportRow:
    data_row_id: str
    global_key: str | None
    row_data: str
    split: Split | None
    labelled: bool
    boxes: tuple[Box, ...] = ()
    entities: tuple[Entity, ...] = ()
    classifications: tuple[Classification, ...] = field(default_factory=tuple)
    # The label's annotation objects as exported, for model types that read kinds the parser
    # does not (polygons, masks...): see lbtrain_trainer.modeltypes.
    objects: tuple[Mapping[str, Any], ...] = ()
    # ``media_attributes.mime_type`` of the export (e.g. "image/png", "text/plain"), if any.
    mime_type: str | None = None


def object_kind(raw: Mapping[str, Any]) -> str:
    """An export object's kind by its geometry key (one of :data:`GEOMETRY_KEYS`: the box
    key, ``polygon``, ``location``...), else its ``annotation_kind``, else "unknown"."""
    for key in GEOMETRY_KEYS:
        if raw.get(key) is not None:
            return key
    kind = raw.get("annotation_kind")
    return kind if isinstance(kind, str) and kind else "unknown"


def find_run(row: Mapping[str, Any], model_run_id: str, model_id: str = "") -> Mapping[str, Any]:
    """The row's ``experiments.<model_id>.runs.<model_run_id>`` object ({} if absent)."""
    experiments = row.get("experiments") or {}
    if not isinstance(experiments, Mapping):
        return {}
    candidates = [experiments[model_id]] if model_id in experiments else list(experiments.values())
    for experiment in candidates:
        runs = experiment.get("runs") if isinstance(experiment, Mapping) else None
        if isinstance(runs, Mapping) and isinstance(runs.get(model_run_id), Mapping):
            run: Mapping[str, Any] = runs[model_run_id]
            return run
    return {}


def _answer_name(answer: Mapping[str, Any]) -> str:
    return str(answer.get("name") or answer.get("value") or "")


def _parse_classification(raw: Mapping[str, Any]) -> Classification | None:
    name = str(raw.get("name") or raw.get("value") or "")
    if "radio_answer" in raw and isinstance(raw["radio_answer"], Mapping):
        return Classification(name, "radio", (_answer_name(raw["radio_answer"]),))
    if "checklist_answers" in raw and isinstance(raw["checklist_answers"], list):
        answers = tuple(_answer_name(a) for a in raw["checklist_answers"] if isinstance(a, Mapping))
        return Classification(name, "checklist", answers)
    if "text_answer" in raw:
        text = raw["text_answer"]
        content = text.get("content") if isinstance(text, Mapping) else text
        return Classification(name, "text", (str(content or ""),))
    return None


def _parse_object(raw: Mapping[str, Any], row_id: str) -> Box | Entity | None:
    name = str(raw.get("name") or raw.get("value") or "")
    try:
        if isinstance(raw.get(BOX_KEY), Mapping):
            bb = raw[BOX_KEY]
            return Box(
                name, float(bb["left"]), float(bb["top"]), float(bb["width"]), float(bb["height"])
            )
        if isinstance(raw.get(ENTITY_KEY), Mapping):
            loc = raw[ENTITY_KEY]
            token = loc.get("token")
            return Entity(
                name, int(loc["start"]), int(loc["end"]), token if isinstance(token, str) else None
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"malformed annotation {name!r}: {exc}", [row_id]) from exc
    return None


def parse_row(row: Mapping[str, Any], model_run_id: str, model_id: str = "") -> ExportRow:
    """Parse one export row; raises :class:`BadInputError` for a structurally broken row."""
    data_row = row.get("data_row")
    if not isinstance(data_row, Mapping) or not data_row.get("id"):
        raise BadInputError("export row without data_row.id")
    row_id = str(data_row["id"])
    run = find_run(row, model_run_id, model_id)
    labels = run.get("labels") or []
    boxes: list[Box] = []
    entities: list[Entity] = []
    classifications: list[Classification] = []
    objects: list[Mapping[str, Any]] = []
    # A data row can carry several labels (e.g. from several projects); the first one wins.
    label = labels[0] if labels and isinstance(labels[0], Mapping) else None
    if label is not None:
        annotations = label.get("annotations") or {}
        for raw in annotations.get("objects") or []:
            if isinstance(raw, Mapping):
                objects.append(raw)
            parsed = _parse_object(raw, row_id) if isinstance(raw, Mapping) else None
            if isinstance(parsed, Box):
                boxes.append(parsed)
            elif isinstance(parsed, Entity):
                entities.append(parsed)
        for raw in annotations.get("classifications") or []:
            cls = _parse_classification(raw) if isinstance(raw, Mapping) else None
            if cls is not None:
                classifications.append(cls)
    attributes = row.get("media_attributes")
    mime = attributes.get("mime_type") if isinstance(attributes, Mapping) else None
    return ExportRow(
        data_row_id=row_id,
        global_key=str(data_row["global_key"]) if data_row.get("global_key") else None,
        row_data=str(data_row.get("row_data") or ""),
        split=split_from_run(run),
        labelled=label is not None,
        boxes=tuple(boxes),
        entities=tuple(entities),
        classifications=tuple(classifications),
        objects=tuple(objects),
        mime_type=mime if isinstance(mime, str) and mime else None,
    )


def utf16_to_codepoints(text: str, start: int, end_inclusive: int) -> tuple[int, int]:
    """Convert UTF-16 code-unit offsets (as a JavaScript app counts) to Python indices."""
    units = 0
    mapping: dict[int, int] = {}
    for index, char in enumerate(text):
        mapping[units] = index
        units += 2 if ord(char) > 0xFFFF else 1
    mapping[units] = len(text)
    if start not in mapping or end_inclusive + 1 not in mapping:
        raise ValueError("offset splits a surrogate pair")
    return mapping[start], mapping[end_inclusive + 1] - 1
