"""The ``prepare`` stage (Labelbox status PREPARING_DATA): decide whether the data can train.

It turns the export and the fetched media into a :class:`PreparedDataset`: splits (the model
run's own; a stable hash for unassigned rows), the label set found in the data, and per-row
ground truth, which the model type reads from each label
(:meth:`~lbtrain_trainer.modeltypes.base.ModelType.ground_truth`). Everything that makes
the data untrainable is found here, before a GPU is spent, and reported as
:class:`BadInputError` (exit 65) naming the data rows: no labelled rows, a class with too few
training examples, broken media, entity offsets that do not match the text, and data of the
wrong shape for the model type (:meth:`~lbtrain_trainer.modeltypes.base.ModelType.check_data`:
a checklist question for a single-label type, a radio question for a multi-label one, a
free-text question, labels holding only polygons for a box type, image rows for a text type),
named with the question and the type. A wrong-shape question used to train to the end and
upload predictions of the wrong shape. Rows that are
merely unusable (no label, no answer for the trained question) are dropped and counted, and the
counts reach the summary.

Memory stays flat in the number of rows: the export is read twice as a stream (a survey that
counts rows, classification answers by question and kind, annotation kinds and media kinds,
then the examples), media are looked up in the on-disk
index, examples go to the manifest file as they are made, and only counts, the dropped rows' ids
and at most ``MAX_IDS`` row ids per error are kept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lbtrain_trainer import hyperparams, media, shared_prepare
from lbtrain_trainer.errors import BadInputError
from lbtrain_trainer.ground_truth import base_example, class_members
from lbtrain_trainer.hyperparams import Hyperparameters
from lbtrain_trainer.manifest import ManifestSummary, ManifestWriter
from lbtrain_trainer.modeltypes import registry
from lbtrain_trainer.modeltypes.base import DataSurvey, ModelType
from lbtrain_trainer.rows import ClassificationKind, ExportRow, parse_row
from lbtrain_trainer.rows import object_kind as object_kind_of
from lbtrain_trainer.settings import Settings
from lbtrain_trainer.splits import Split, SplitPlan
from lbtrain_trainer.workspace import Workspace

if TYPE_CHECKING:
    from lbtrain_trainer.text_encoding import WordCounter

log = logging.getLogger(__name__)

MAX_IDS = 1000  # row ids kept for an error message (the termination message shows 20)


def read_export(
    path: Path, model_run_id: str, model_id: str, plan: SplitPlan | None = None
) -> Iterator[ExportRow]:
    """The export's rows, parsed one at a time (call again for another pass), each with the
    split the export stage resolved for it (``plan``), if any."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInputError(f"export line {number} is not JSON: {exc}") from exc
            row = parse_row(raw, model_run_id, model_id)
            if plan is not None and row.data_row_id in plan.splits:
                row = dataclasses.replace(row, split=plan.splits[row.data_row_id])
            yield row


@dataclass
class _Tally:
    """What one pass over the rows keeps: counts, and at most ``MAX_IDS`` row ids per list."""

    rows: int = 0
    labelled: int = 0
    row_ids: list[str] = field(default_factory=list)  # some rows (for errors)
    labelled_ids: list[str] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)  # classification name -> rows
    every: Counter[str] = field(default_factory=Counter)
    # question -> kind (radio, checklist, text) -> labels; object kind -> labels
    question_kinds: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    object_kinds: Counter[str] = field(default_factory=Counter)
    media_counts: Counter[str] = field(default_factory=Counter)  # image/text/... -> rows
    media_rows: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def survey(self) -> DataSurvey:
        return DataSurvey(
            question_kinds={q: dict(k) for q, k in self.question_kinds.items()},
            object_kinds=dict(self.object_kinds),
            media_rows={k: list(v) for k, v in self.media_rows.items()},
            media_counts=dict(self.media_counts),
        )


def _note(ids: list[str], row_id: str) -> None:
    if len(ids) < MAX_IDS:
        ids.append(row_id)


# MIME major types that say what a data row is; others (``application/octet-stream``...) say
# nothing certain and are not counted.
MEDIA_MAJORS = frozenset({"image", "text", "video", "audio"})


def media_of(mime_type: str | None) -> str | None:
    """The media kind of a MIME type: its major type if one of :data:`MEDIA_MAJORS`."""
    if not mime_type or "/" not in mime_type:
        return None
    major = mime_type.split("/", 1)[0].strip().lower()
    return major if major in MEDIA_MAJORS else None


def _survey(rows: Iterable[ExportRow], kind: ClassificationKind | None) -> _Tally:
    tally = _Tally()
    for row in rows:
        tally.rows += 1
        _note(tally.row_ids, row.data_row_id)
        if not row.labelled:
            continue
        tally.labelled += 1
        _note(tally.labelled_ids, row.data_row_id)
        media_kind = media_of(row.mime_type)
        if media_kind is not None:
            tally.media_counts[media_kind] += 1
            _note(tally.media_rows[media_kind], row.data_row_id)
        for cls in row.classifications:
            tally.every[cls.name] += 1
            tally.question_kinds[cls.name][cls.kind] += 1
            if cls.kind == kind:
                tally.by_kind[cls.name] += 1
        for object_kind in {object_kind_of(raw) for raw in row.objects}:
            tally.object_kinds[object_kind] += 1
    return tally


def _feature(tally: _Tally, wanted: str, kind: ClassificationKind) -> str:
    """The classification question to learn: ``wanted`` if some label answers it, else the
    most answered question of the type's answer kind."""
    if wanted:
        if wanted not in tally.every:
            raise BadInputError(
                f"no label answers the classification {wanted!r} "
                f"(found: {', '.join(sorted(tally.every)) or 'none'})"
            )
        return wanted
    if not tally.by_kind:
        if not tally.every:
            raise BadInputError("no label has a classification answer to learn")
        found = ", ".join(
            f"{q!r} ({'/'.join(sorted(tally.question_kinds[q]))})" for q in sorted(tally.every)
        )
        raise BadInputError(
            f"no label answers a {kind} question, which this model type learns; the labels "
            f"answer {found}. Pick the model type for that kind of question"
        )
    return tally.by_kind.most_common(1)[0][0]


def build_dataset(
    rows: Callable[[], Iterable[ExportRow]],
    model_type: str,
    lookup: Callable[[str], media.MediaEntry | None],
    media_root: Path,
    hp: Hyperparameters,
    out: Path,
    words: WordCounter | None = None,
) -> ManifestSummary:
    """Validate the rows and write the dataset to ``out``; raises :class:`BadInputError`.

    ``rows`` gives a fresh pass over the export each call (two passes: a survey, then the
    examples, written as they are made); ``lookup`` finds a row's media. ``words``, if given,
    counts the words of the training texts (for a small model's tokenizer).
    """
    kind = registry.get(model_type)
    tally = _survey(rows(), kind.answer_kind)
    if not tally.rows:
        raise BadInputError("the model run has no data rows")
    if not tally.labelled:
        raise BadInputError("no data row of the model run has a label", tally.row_ids)
    feature = (
        _feature(tally, hp.feature_name, kind.answer_kind) if kind.answer_kind is not None else ""
    )
    kind.check_data(survey=tally.survey(), question=feature)
    dropped: dict[str, list[str]] = defaultdict(list)
    broken: list[str] = []
    first_error = ""
    splits: Counter[str] = Counter()
    train_counts: Counter[str] = Counter()
    class_ids: dict[str, list[str]] = defaultdict(list)
    degenerate = 0
    with ManifestWriter(out, model_type, feature) as writer:
        for row in rows():
            if not row.labelled:
                dropped["no label in this model run"].append(row.data_row_id)
                continue
            entry = lookup(row.data_row_id)
            if entry is None or entry.error or entry.path is None:
                reason = (entry.error if entry else None) or "not fetched"
                first_error = first_error or f"data row {row.data_row_id}: {reason}"
                _note(broken, row.data_row_id)
                dropped["broken media"].append(row.data_row_id)
                continue
            truth = kind.ground_truth(
                row=row,
                base=base_example(row, entry, media_root, hp),
                feature=feature,
                media_file=media_root / entry.path,
                hp=hp,
            )
            degenerate += truth.dropped_annotations
            example = truth.example
            if example is None:
                dropped[truth.reason].append(row.data_row_id)
                continue
            writer.add(example)
            splits[example.split.value] += 1
            members = class_members(example)
            for cls in set(members):
                _note(class_ids[cls], example.data_row_id)
            if example.split == Split.TRAIN:
                train_counts.update(members)
                if words is not None:
                    words.add(media.read_media_text(media_root / entry.path))
        if dropped["broken media"] and not hp.skip_broken_media:
            raise BadInputError(
                f"media of {len(dropped['broken media'])} data row(s) could not be loaded "
                f"(first: {first_error})",
                broken,
            )
        for reason, ids in sorted(dropped.items()):
            if ids and reason != "broken media":
                log.warning(
                    "dropped %d data row(s): %s (first: %s)", len(ids), reason, ", ".join(ids[:5])
                )
        if degenerate:
            log.warning(
                "dropped %d annotations smaller than a pixel or outside their image", degenerate
            )
        if not splits:
            raise BadInputError(
                "no labelled data row is usable for " + model_type, tally.labelled_ids
            )
        classes = tuple(sorted(class_ids))
        _check_classes(kind, classes, splits, train_counts, class_ids, hp)
        eval_split, tune_split = _choose_eval_splits(splits)
        return writer.finish(
            classes,
            {s.value: splits[s.value] for s in Split},
            eval_split,
            tune_split,
            {k: v for k, v in dropped.items() if v},
        )


def _check_classes(
    kind: ModelType,
    classes: tuple[str, ...],
    splits: Counter[str],
    train_counts: Counter[str],
    class_ids: dict[str, list[str]],
    hp: Hyperparameters,
) -> None:
    if not classes:
        raise BadInputError(
            f"the labels hold no {kind.name} annotation to learn",
            [i for ids in class_ids.values() for i in ids][:MAX_IDS],
        )
    kind.check_classes(classes=classes)
    if not splits[Split.TRAIN.value]:
        raise BadInputError("no data row is in the training split")
    for cls in classes:
        if train_counts[cls] < hp.min_examples_per_class:
            raise BadInputError(
                f"class {cls!r} has {train_counts[cls]} training example(s); at least "
                f"{hp.min_examples_per_class} are needed (min_examples_per_class)",
                class_ids[cls],
            )


def _choose_eval_splits(splits: Counter[str]) -> tuple[Split, Split]:
    eval_split = next(s for s in (Split.TEST, Split.VALIDATION, Split.TRAIN) if splits[s.value])
    tune_split = next(s for s in (Split.VALIDATION, Split.TRAIN) if splits[s.value])
    if eval_split != Split.TEST:
        log.warning("no test rows: evaluating on the %s split", eval_split.value)
    return eval_split, tune_split


def run_prepare(settings: Settings) -> dict[str, Any]:
    ws = Workspace(settings.workspace)
    # A run of several pods prepares once: a workspace unpacked from pod 0's bundle is ready.
    reused = shared_prepare.reuse_for_prepare(settings, ws)
    if reused is not None:
        return reused
    result = _prepare(settings, ws)
    shared_prepare.prepared(settings, ws, result)  # pod 0 of several publishes the bundle
    return result


def _prepare(settings: Settings, ws: Workspace) -> dict[str, Any]:
    hp = hyperparams.load(ws.require(ws.hyperparameters_file, "export"))
    export_file = ws.require(ws.export_file, "export")
    plan = (
        SplitPlan.from_json(json.loads(ws.splits_file.read_text()))
        if ws.splits_file.exists()
        else None
    )
    small_text = registry.get(settings.model_type).media == "text" and hp.model_size == "small"
    words = None
    if small_text:
        from lbtrain_trainer.text_encoding import WordCounter

        words = WordCounter()
    with media.MediaIndex(ws.media_dir) as index:
        dataset = build_dataset(
            lambda: read_export(export_file, settings.model_run_id, settings.model_id, plan),
            settings.model_type,
            index.get,
            ws.media_dir,
            hp,
            ws.dataset_file,
            words,
        )
    if words is not None:
        from lbtrain_trainer.text_encoding import save_wordpiece

        save_wordpiece(words, hp.vocab_size, ws.tokenizer_file)
    log.info("prepared %s: %s, classes %s", settings.model_type, dataset.splits, dataset.classes)
    return {
        "stage": "prepare",
        "splits": dataset.splits,
        "split_sources": plan.counts() if plan is not None else None,
        "classes": list(dataset.classes),
        "dropped_rows": {k: len(v) for k, v in dataset.dropped.items()},
    }
