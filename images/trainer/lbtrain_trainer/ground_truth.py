"""Ground truth for one data row in the trainer's terms: its :class:`Example`.

Given a parsed export row, its stored media and the question being learned, it decides the
row's split and labels, fixes what can be fixed (entity offsets counted in UTF-16, boxes
clipped to the image), and says why a row is dropped. ``prepare`` calls it once per row while
it streams the export, and does the checks over the whole dataset itself.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lbtrain_trainer.errors import BadInputError
from lbtrain_trainer.hyperparams import Hyperparameters
from lbtrain_trainer.manifest import Example
from lbtrain_trainer.media_index import MediaEntry
from lbtrain_trainer.rows import Box, Entity, ExportRow, utf16_to_codepoints
from lbtrain_trainer.splits import Split, hash_split

CLASSIFICATION_KIND = {
    "image_single_classification": "radio",
    "text_single_classification": "radio",
    "image_multi_classification": "checklist",
    "text_multi_classification": "checklist",
}


def _check_entities(row: ExportRow, text: str) -> tuple[Entity, ...]:
    fixed = []
    for entity in row.entities:
        start, end = entity.start, entity.end
        matches = 0 <= start <= end < len(text) and (
            entity.token is None or text[start : end + 1] == entity.token
        )
        if not matches and entity.token is not None:
            try:  # offsets counted in UTF-16 code units, as a browser counts
                start, end = utf16_to_codepoints(text, entity.start, entity.end)
                matches = text[start : end + 1] == entity.token
            except ValueError:
                matches = False
        if not matches:
            raise BadInputError(
                f"entity {entity.name!r} at {entity.start}..{entity.end} (inclusive) does not "
                f"match the text of its data row",
                [row.data_row_id],
            )
        fixed.append(replace(entity, start=start, end=end))
    return tuple(fixed)


def _clip_boxes(row: ExportRow, width: int, height: int) -> tuple[tuple[Box, ...], int]:
    kept, dropped = [], 0
    for box in row.boxes:
        left, top = max(0.0, box.left), max(0.0, box.top)
        right, bottom = (
            min(float(width), box.left + box.width),
            min(float(height), box.top + box.height),
        )
        if right - left < 1 or bottom - top < 1:
            dropped += 1
            continue
        kept.append(Box(box.name, left, top, right - left, bottom - top))
    return tuple(kept), dropped


def assign_split(row: ExportRow, hp: Hyperparameters) -> Split:
    return row.split or hash_split(row.data_row_id, hp.validation_fraction, hp.test_fraction)


def make_example(
    row: ExportRow,
    entry: MediaEntry,
    model_type: str,
    feature: str,
    media_root: Path,
    hp: Hyperparameters,
) -> tuple[Example | None, str, int]:
    """The row's example, or None and why the row is dropped; and how many of its boxes were
    dropped as degenerate."""
    assert entry.path is not None
    rel = str(Path(media_root.name) / entry.path)
    example = Example(
        row.data_row_id, row.global_key, assign_split(row, hp), rel, entry.width, entry.height
    )
    if model_type in CLASSIFICATION_KIND:
        answers = [c for c in row.classifications if c.name == feature]
        if not answers:
            return None, f"no answer for {feature!r}", 0
        labels = tuple(sorted(set(answers[0].answers)))
        if CLASSIFICATION_KIND[model_type] == "radio" and len(labels) != 1:
            return None, f"not exactly one answer for {feature!r}", 0
        return replace(example, labels=labels), "", 0
    if model_type == "bounding_box":
        wanted = [b for b in row.boxes if not hp.feature_name or b.name == hp.feature_name]
        boxes, bad = _clip_boxes(
            replace(row, boxes=tuple(wanted)), entry.width or 0, entry.height or 0
        )
        return replace(example, boxes=boxes), "", bad
    text = (media_root / entry.path).read_text(encoding="utf-8")
    entities = _check_entities(row, text)
    if hp.feature_name:
        entities = tuple(e for e in entities if e.name == hp.feature_name)
    return replace(example, entities=entities), "", 0


def class_members(example: Example) -> list[str]:
    return (
        list(example.labels) + [b.name for b in example.boxes] + [e.name for e in example.entities]
    )
