"""The prepared dataset: what ``prepare`` hands to ``train``, as one JSON file.

It holds, per kept data row, the split, the local media file and the ground truth in the
trainer's own terms, plus the label set and the rows that were dropped and why. The train
stage needs nothing else from the export, and a person can read the file to see what the model
was trained on. ``prepare`` writes it with :class:`ManifestWriter`, one example at a time, so
its memory does not grow with the number of rows; the file is the same JSON object that
:meth:`PreparedDataset.save` writes (the label set and splits come after the examples).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from lbtrain_trainer.rows import Box, Entity
from lbtrain_trainer.splits import Split


@dataclass(frozen=True)
class Example:
    data_row_id: str
    global_key: str | None
    split: Split
    media: str  # path relative to the workspace (image file or UTF-8 text file)
    width: int | None = None  # original image size; boxes are in these pixels
    height: int | None = None
    labels: tuple[str, ...] = ()  # classification answers
    boxes: tuple[Box, ...] = ()
    entities: tuple[Entity, ...] = ()  # inclusive ends, Python string indices


@dataclass
class PreparedDataset:
    model_type: str
    feature_name: str  # the classification question; "" for object types
    classes: tuple[str, ...]
    examples: list[Example]
    eval_split: Split = Split.TEST  # where predictions and metrics are computed
    tune_split: Split = Split.VALIDATION  # where thresholds are tuned
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason -> data row ids

    def split(self, split: Split) -> list[Example]:
        return [e for e in self.examples if e.split == split]

    def counts(self) -> dict[str, int]:
        return {s.value: len(self.split(s)) for s in Split}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(asdict(self), separators=(",", ":")))
        partial.replace(path)

    @staticmethod
    def load(path: Path) -> PreparedDataset:
        raw: dict[str, Any] = json.loads(path.read_text())
        examples = [
            Example(
                data_row_id=e["data_row_id"],
                global_key=e["global_key"],
                split=Split(e["split"]),
                media=e["media"],
                width=e["width"],
                height=e["height"],
                labels=tuple(e["labels"]),
                boxes=tuple(Box(**b) for b in e["boxes"]),
                entities=tuple(Entity(**n) for n in e["entities"]),
            )
            for e in raw["examples"]
        ]
        return PreparedDataset(
            model_type=raw["model_type"],
            feature_name=raw["feature_name"],
            classes=tuple(raw["classes"]),
            examples=examples,
            eval_split=Split(raw["eval_split"]),
            tune_split=Split(raw["tune_split"]),
            dropped={k: list(v) for k, v in raw["dropped"].items()},
        )


@dataclass(frozen=True)
class ManifestSummary:
    """What :class:`ManifestWriter` wrote, less the examples."""

    model_type: str
    feature_name: str
    classes: tuple[str, ...]
    splits: dict[str, int]
    eval_split: Split
    tune_split: Split
    dropped: dict[str, list[str]]


class ManifestWriter:
    """Write a :class:`PreparedDataset` file example by example (atomically, on finish)."""

    def __init__(self, path: Path, model_type: str, feature_name: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.partial = path.with_suffix(".partial")
        self.model_type = model_type
        self.feature_name = feature_name
        self._out: IO[str] = self.partial.open("w", encoding="utf-8")
        head = {"model_type": model_type, "feature_name": feature_name}
        self._out.write(json.dumps(head, separators=(",", ":"))[:-1] + ',"examples":[')
        self._count = 0

    def add(self, example: Example) -> None:
        self._out.write(
            ("," if self._count else "") + json.dumps(asdict(example), separators=(",", ":"))
        )
        self._count += 1

    def finish(
        self,
        classes: tuple[str, ...],
        splits: dict[str, int],
        eval_split: Split,
        tune_split: Split,
        dropped: dict[str, list[str]],
    ) -> ManifestSummary:
        tail = {
            "classes": list(classes),
            "eval_split": eval_split,
            "tune_split": tune_split,
            "dropped": dropped,
        }
        self._out.write("]," + json.dumps(tail, separators=(",", ":"))[1:])
        self._out.close()
        self.partial.replace(self.path)
        return ManifestSummary(
            self.model_type, self.feature_name, classes, splits, eval_split, tune_split, dropped
        )

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._out.closed:  # not finished: leave no half-written manifest behind
            self._out.close()
            self.partial.unlink(missing_ok=True)
