"""Ground truth for one data row in the trainer's terms: its :class:`Example`.

Given a parsed export row, its stored media and the question being learned, it decides the
row's split and labels, fixes what can be fixed (entity offsets counted in UTF-16, boxes
clipped to the image), and says why a row is dropped. These are the shared, pure pieces; which
of them a model type uses is the type's own business (:mod:`lbtrain_trainer.modeltypes`), so
nothing here asks which type is being prepared. ``prepare`` calls the type once per row while it
streams the export, and does the checks over the whole dataset itself.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lbtrain_trainer.errors import BadInputError
from lbtrain_trainer.hyperparams import Hyperparameters
from lbtrain_trainer.manifest import Example
from lbtrain_trainer.media_index import MediaEntry
from lbtrain_trainer.rows import Box, ClassificationKind, Entity, ExportRow, utf16_to_codepoints
from lbtrain_trainer.splits import Split, hash_split


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


def base_example(
    row: ExportRow, entry: MediaEntry, media_root: Path, hp: Hyperparameters
) -> Example:
    """The row's example without ground truth: ids, split, media file and image size."""
    assert entry.path is not None
    rel = str(Path(media_root.name) / entry.path)
    return Example(
        row.data_row_id, row.global_key, assign_split(row, hp), rel, entry.width, entry.height
    )


def answer_truth(
    row: ExportRow, base: Example, feature: str, kind: ClassificationKind
) -> tuple[Example | None, str]:
    """A classification example: the row's answers to ``feature``; a radio question needs
    exactly one. None and why, when the row does not answer it."""
    answers = [c for c in row.classifications if c.name == feature]
    if not answers:
        return None, f"no answer for {feature!r}"
    labels = tuple(sorted(set(answers[0].answers)))
    if kind == "radio" and len(labels) != 1:
        return None, f"not exactly one answer for {feature!r}"
    return replace(base, labels=labels), ""


def box_truth(row: ExportRow, base: Example, hp: Hyperparameters) -> tuple[Example, int]:
    """A detection example: the row's boxes (``feature_name`` only, if set), clipped to the
    image; and how many were dropped as degenerate."""
    wanted = [b for b in row.boxes if not hp.feature_name or b.name == hp.feature_name]
    boxes, bad = _clip_boxes(replace(row, boxes=tuple(wanted)), base.width or 0, base.height or 0)
    return replace(base, boxes=boxes), bad


def entity_truth(row: ExportRow, base: Example, text: str, hp: Hyperparameters) -> Example:
    """An NER example: the row's entities checked against (and fixed to) ``text``."""
    entities = _check_entities(row, text)
    if hp.feature_name:
        entities = tuple(e for e in entities if e.name == hp.feature_name)
    return replace(base, entities=entities)


def class_members(example: Example) -> list[str]:
    return (
        list(example.labels) + [b.name for b in example.boxes] + [e.name for e in example.entities]
    )
