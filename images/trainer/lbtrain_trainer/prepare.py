"""The ``prepare`` stage (Labelbox status PREPARING_DATA): decide whether the data can train.

It turns the export and the fetched media into a :class:`PreparedDataset`: splits (the model
run's own; a stable hash for unassigned rows), the label set found in the data, and per-row
ground truth for the model type. Everything that makes the data untrainable is found here,
before a GPU is spent, and reported as :class:`BadInputError` (exit 65) naming the data rows:
no labelled rows, a class with too few training examples, broken media, entity offsets that do
not match the text. Rows that are merely unusable (no label, no answer for the trained
question) are dropped and counted, and the counts reach the summary.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from lbtrain_trainer import hyperparams, media
from lbtrain_trainer.errors import BadInputError
from lbtrain_trainer.export import media_kind
from lbtrain_trainer.hyperparams import Hyperparameters
from lbtrain_trainer.manifest import Example, PreparedDataset
from lbtrain_trainer.rows import Box, Entity, ExportRow, parse_row, utf16_to_codepoints
from lbtrain_trainer.settings import Settings
from lbtrain_trainer.splits import Split, hash_split
from lbtrain_trainer.workspace import Workspace

log = logging.getLogger(__name__)

CLASSIFICATION_KIND = {
    "image_single_classification": "radio",
    "text_single_classification": "radio",
    "image_multi_classification": "checklist",
    "text_multi_classification": "checklist",
}


def read_export(path: Path, model_run_id: str, model_id: str) -> list[ExportRow]:
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInputError(f"export line {number} is not JSON: {exc}") from exc
            rows.append(parse_row(raw, model_run_id, model_id))
    return rows


def choose_feature(rows: Iterable[ExportRow], model_type: str, wanted: str) -> str:
    """The classification question to learn: the configured one, else the most frequent one
    of the model type's kind (radio for single, checklist for multi), else of any kind."""
    kind = CLASSIFICATION_KIND[model_type]
    by_kind: Counter[str] = Counter()
    every: Counter[str] = Counter()
    for row in rows:
        for cls in row.classifications:
            every[cls.name] += 1
            if cls.kind == kind:
                by_kind[cls.name] += 1
    if wanted:
        if wanted not in every:
            raise BadInputError(
                f"no label answers the classification {wanted!r} "
                f"(found: {', '.join(sorted(every)) or 'none'})"
            )
        return wanted
    counts = by_kind or every
    if not counts:
        raise BadInputError("no label has a classification answer to learn")
    return counts.most_common(1)[0][0]


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


def _assign_split(row: ExportRow, hp: Hyperparameters) -> Split:
    return row.split or hash_split(row.data_row_id, hp.validation_fraction, hp.test_fraction)


def build_dataset(
    rows: list[ExportRow],
    model_type: str,
    index: dict[str, media.MediaEntry],
    media_root: Path,
    hp: Hyperparameters,
) -> PreparedDataset:
    """Validate the rows and build the dataset; raises :class:`BadInputError`."""
    if not rows:
        raise BadInputError("the model run has no data rows")
    dropped: dict[str, list[str]] = defaultdict(list)
    labelled = [r for r in rows if r.labelled]
    if not labelled:
        raise BadInputError(
            "no data row of the model run has a label", [r.data_row_id for r in rows]
        )
    dropped["no label in this model run"] = [r.data_row_id for r in rows if not r.labelled]
    broken = {
        r.data_row_id: index[r.data_row_id].error
        for r in labelled
        if r.data_row_id not in index or index[r.data_row_id].error
    }
    if broken and not hp.skip_broken_media:
        first = next(iter(broken.values())) or "not fetched"
        raise BadInputError(
            f"media of {len(broken)} data row(s) could not be loaded (first: {first})", list(broken)
        )
    dropped["broken media"] = list(broken)
    feature = (
        choose_feature(labelled, model_type, hp.feature_name)
        if model_type in CLASSIFICATION_KIND
        else ""
    )
    examples: list[Example] = []
    degenerate_boxes = 0
    for row in labelled:
        if row.data_row_id in broken:
            continue
        entry = index[row.data_row_id]
        assert entry.path is not None
        rel = str(Path(media_root.name) / entry.path)
        example = Example(
            row.data_row_id, row.global_key, _assign_split(row, hp), rel, entry.width, entry.height
        )
        if model_type in CLASSIFICATION_KIND:
            answers = [c for c in row.classifications if c.name == feature]
            if not answers:
                dropped[f"no answer for {feature!r}"].append(row.data_row_id)
                continue
            labels = tuple(sorted(set(answers[0].answers)))
            if CLASSIFICATION_KIND[model_type] == "radio" and len(labels) != 1:
                dropped[f"not exactly one answer for {feature!r}"].append(row.data_row_id)
                continue
            example = replace(example, labels=labels)
        elif model_type == "bounding_box":
            wanted = [b for b in row.boxes if not hp.feature_name or b.name == hp.feature_name]
            boxes, bad = _clip_boxes(
                replace(row, boxes=tuple(wanted)), entry.width or 0, entry.height or 0
            )
            degenerate_boxes += bad
            example = replace(example, boxes=boxes)
        else:
            text = (media_root / entry.path).read_text(encoding="utf-8")
            entities = _check_entities(row, text)
            if hp.feature_name:
                entities = tuple(e for e in entities if e.name == hp.feature_name)
            example = replace(example, entities=entities)
        examples.append(example)
    if degenerate_boxes:
        log.warning(
            "dropped %d boxes smaller than a pixel or outside their image", degenerate_boxes
        )
    if not examples:
        raise BadInputError(
            "no labelled data row is usable for " + model_type, [r.data_row_id for r in labelled]
        )
    dataset = PreparedDataset(
        model_type,
        feature,
        _classes(examples),
        examples,
        dropped={k: v for k, v in dropped.items() if v},
    )
    _check_classes(dataset, hp)
    _choose_eval_splits(dataset)
    return dataset


def _class_members(example: Example) -> list[str]:
    return (
        list(example.labels) + [b.name for b in example.boxes] + [e.name for e in example.entities]
    )


def _classes(examples: list[Example]) -> tuple[str, ...]:
    return tuple(sorted({c for e in examples for c in _class_members(e)}))


def _check_classes(dataset: PreparedDataset, hp: Hyperparameters) -> None:
    if not dataset.classes:
        raise BadInputError(
            f"the labels hold no {dataset.model_type} annotation to learn",
            [e.data_row_id for e in dataset.examples],
        )
    if dataset.model_type.endswith("single_classification") and len(dataset.classes) < 2:
        raise BadInputError(
            f"single classification needs at least two classes; every row "
            f"answers {dataset.classes[0]!r}"
        )
    train = dataset.split(Split.TRAIN)
    if not train:
        raise BadInputError("no data row is in the training split")
    counts = Counter(c for e in train for c in _class_members(e))
    for cls in dataset.classes:
        if counts[cls] < hp.min_examples_per_class:
            rows = [e.data_row_id for e in dataset.examples if cls in _class_members(e)]
            raise BadInputError(
                f"class {cls!r} has {counts[cls]} training example(s); at least "
                f"{hp.min_examples_per_class} are needed (min_examples_per_class)",
                rows,
            )


def _choose_eval_splits(dataset: PreparedDataset) -> None:
    counts = dataset.counts()
    dataset.eval_split = next(
        s for s in (Split.TEST, Split.VALIDATION, Split.TRAIN) if counts[s.value]
    )
    dataset.tune_split = next(s for s in (Split.VALIDATION, Split.TRAIN) if counts[s.value])
    if dataset.eval_split != Split.TEST:
        log.warning("no test rows: evaluating on the %s split", dataset.eval_split.value)


def run_prepare(settings: Settings) -> dict[str, Any]:
    ws = Workspace(settings.workspace)
    hp = hyperparams.load(ws.require(ws.hyperparameters_file, "export"))
    rows = read_export(
        ws.require(ws.export_file, "export"), settings.model_run_id, settings.model_id
    )
    index = media.load_index(ws.media_dir)
    dataset = build_dataset(rows, settings.model_type, index, ws.media_dir, hp)
    dataset.save(ws.dataset_file)
    if media_kind(settings.model_type) == "text" and hp.model_size == "small":
        from lbtrain_trainer.text_encoding import train_wordpiece

        texts = [
            (ws.root / e.media).read_text(encoding="utf-8") for e in dataset.split(Split.TRAIN)
        ]
        train_wordpiece(texts, hp.vocab_size, ws.tokenizer_file)
    log.info("prepared %s: %s, classes %s", settings.model_type, dataset.counts(), dataset.classes)
    return {
        "stage": "prepare",
        "splits": dataset.counts(),
        "classes": list(dataset.classes),
        "dropped_rows": {k: len(v) for k, v in dataset.dropped.items()},
    }
