"""The model-type interface: everything the trainer must know about one kind of model.

The stages (``export``, ``prepare``, ``train``) are the same for every model type. What differs
is answered by one :class:`ModelType` per type, found through
:mod:`lbtrain_trainer.modeltypes.registry`, so that a type is defined in one module and a team
can add its own in its own distribution (entry-point group ``lbtrain.model_types``) without
changing lbtrain. Nothing outside the type modules compares a model type's name: a question the
stages used to answer with ``if model_type == ...`` (is it an image type? multi-label? which
defaults?) is an attribute or a method here, so a forgotten branch is an incomplete type the
registry refuses, not a silent fall-through to some other model.

A type never sees ranks or processes: the runtime decides who trains (every rank), who loads a
resumed checkpoint (every rank) and who predicts, uploads and writes (rank 0 only), and calls
the type's pure functions where it needs them. The scale-out work changes the runtime only.

What each member must do and return is documented in ``images/trainer/README.md`` ("Model
types").
"""

from __future__ import annotations

import abc
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from lbtrain_trainer.errors import BadInputError
from lbtrain_trainer.hyperparams import Hyperparameters
from lbtrain_trainer.manifest import Example, PreparedDataset
from lbtrain_trainer.outputs import RowOutput
from lbtrain_trainer.rows import ClassificationKind, ExportRow

if TYPE_CHECKING:  # torch: imported only by the train stage
    from lbtrain_trainer.tasks.base import Task, TaskContext

MediaKind = Literal["image", "text"]
MEDIA_KINDS: tuple[MediaKind, ...] = ("image", "text")
ANSWER_KINDS: tuple[ClassificationKind | None, ...] = (None, "radio", "checklist")
# One (ground truth, model output) pair per evaluated data row.
Pair = tuple[Example, RowOutput]
# How a question kind reads in an error message.
QUESTION_KINDS = {"radio": "radio (one answer)", "checklist": "checklist", "text": "free-text"}


@dataclass(frozen=True)
class DataSurvey:
    """What ``prepare``'s first pass over the labelled rows found, for
    :meth:`ModelType.check_data`: per classification question, how many labels answer it as
    each kind (``radio``, ``checklist``, ``text``); per annotation object kind (``bounding_box``,
    ``polygon``, ``location``...), how many labels hold one; per media kind of the export's
    ``media_attributes.mime_type`` (``image``, ``text``, or another type such as ``video``),
    some of the rows (rows without a MIME type are not counted)."""

    question_kinds: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    object_kinds: Mapping[str, int] = field(default_factory=dict)
    media_rows: Mapping[str, Sequence[str]] = field(default_factory=dict)
    media_counts: Mapping[str, int] = field(default_factory=dict)


def _counted(counts: Mapping[str, int], names: Mapping[str, str] | None = None) -> str:
    return ", ".join(
        f"{(names or {}).get(k, k)} ({n} label{'s' if n != 1 else ''})"
        for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )


def question_mismatch(
    type_name: str, answer_kind: ClassificationKind, question: str, kinds: Mapping[str, int]
) -> str | None:
    """Why ``question``, answered as ``kinds`` (kind -> labels), cannot train a type that
    learns ``answer_kind`` answers; None when it can."""
    wrong = {k: n for k, n in kinds.items() if k != answer_kind}
    if not wrong:
        return None
    return (
        f"model type {type_name!r} learns a {QUESTION_KINDS[answer_kind]} question, but "
        f"{question!r} is answered as {_counted(wrong, QUESTION_KINDS)}: its predictions would "
        "not fit the question in Labelbox. Pick the model type for that kind of question, or "
        "another question with feature_name"
    )


def annotation_mismatch(
    type_name: str, learns: Sequence[str], kinds: Mapping[str, int]
) -> str | None:
    """Why labels holding objects of ``kinds`` (kind -> labels) and none of ``learns`` cannot
    train the type; None when some label holds a kind it learns (or no label holds objects)."""
    if not kinds or any(k in learns for k in kinds):
        return None
    return (
        f"model type {type_name!r} learns {' or '.join(learns)} annotations, but the labels "
        f"hold only {_counted(kinds)}"
    )


def media_mismatch(
    type_name: str, media: str, counts: Mapping[str, int]
) -> tuple[str, list[str]] | None:
    """Why rows whose media kinds are ``counts`` (kind -> rows) cannot train a type of
    ``media``: the message and the wrong kinds; None when every counted row is ``media``."""
    wrong = {k: n for k, n in counts.items() if k != media}
    if not wrong:
        return None
    shown = ", ".join(f"{k} ({n} row{'s' if n != 1 else ''})" for k, n in sorted(wrong.items()))
    return (
        f"model type {type_name!r} trains on {media}, but data rows are {shown} "
        "(media_attributes.mime_type)",
        sorted(wrong),
    )


@dataclass(frozen=True)
class Truth:
    """A row's ground truth (:meth:`ModelType.ground_truth`): the example, or None and why the
    row is dropped; and how many of its annotations were dropped as unusable (logged)."""

    example: Example | None
    reason: str = ""
    dropped_annotations: int = 0


@dataclass
class Evaluation:
    """What :meth:`ModelType.evaluate` returns: the run-level metrics (``headline_name`` among
    them), and the NDJSON rows for ``model_run.add_predictions`` (predictions carry a
    ``uuid``; metric rows do not)."""

    headline_name: str
    headline: float
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def prediction_count(self) -> int:
        return sum(1 for r in self.rows if "uuid" in r)


@dataclass(frozen=True)
class SyntheticLabel:
    """One synthetic data row (:meth:`ModelType.synthetic_label`): its media and the label's
    ``annotations`` object as a Labelbox export holds it (``objects``, ``classifications``,
    ``relationships``)."""

    media: bytes
    content_type: str  # image/png or text/plain
    annotations: dict[str, Any]
    width: int | None = None  # images: the size written to media_attributes
    height: int | None = None


class ModelType(abc.ABC):
    """One Labelbox model type. Subclass it, set the class attributes, implement the methods.

    The registry refuses a class that leaves an abstract method out or a required attribute
    (``name``, ``media``, ``headline_metric``) unset. Methods are pure: they read their
    arguments (and the media file they are given) and return values; the stages do the I/O.
    """

    # --- required ----------------------------------------------------------------------------
    name: ClassVar[str]  # the model type, lower case, as TrainingTemplates and Labelbox name it
    media: ClassVar[MediaKind]  # what the export stage downloads per data row
    headline_metric: ClassVar[str]  # the key of Evaluation.metrics that sums the run up

    # --- optional ----------------------------------------------------------------------------
    # The classification question this type learns (radio: one answer, checklist: several);
    # None: it learns object or entity names, and the prepared dataset has no feature name.
    answer_kind: ClassVar[ClassificationKind | None] = None
    # True: train predicts the dataset's tune split too and passes it to evaluate (thresholds).
    tunes_thresholds: ClassVar[bool] = False
    # Hyperparameters of the production size, over the built-in defaults and under the
    # template's and the model run config's (model_size small uses hyperparams.SMALL_DEFAULTS).
    production_defaults: ClassVar[Mapping[str, Any]] = {}
    # Files or folders under LBTRAIN_PRETRAINED the production model reads (for the listing and
    # the docs; the task's model builder resolves them through models.pretrained).
    pretrained: ClassVar[tuple[str, ...]] = ()
    # The synthetic data: the classification question its labels answer ("" for objects) and
    # the classes it uses, sorted.
    synthetic_feature: ClassVar[str] = ""
    synthetic_classes: ClassVar[tuple[str, ...]] = ()

    # The export object kinds this type learns (``rows.object_kind``: "bounding_box",
    # "location"...); () when it learns classification answers or does not say.
    annotation_kinds: ClassVar[tuple[str, ...]] = ()

    def check_data(self, *, survey: DataSurvey, question: str) -> None:
        """Raise :class:`BadInputError` when the data is of the wrong shape for this type, named
        in the message: the learned ``question`` answered in another kind than
        ``answer_kind``, labels with objects but none of ``annotation_kinds``, rows whose media
        is not ``media``. Called by ``prepare`` before any example is made."""
        found = media_mismatch(self.name, self.media, survey.media_counts)
        if found is not None:
            message, kinds = found
            rows = [r for k in kinds for r in survey.media_rows.get(k, ())]
            raise BadInputError(message, rows)
        if self.answer_kind is not None and question:
            why = question_mismatch(
                self.name, self.answer_kind, question, survey.question_kinds.get(question, {})
            )
            if why is not None:
                raise BadInputError(why)
        if self.annotation_kinds:
            why = annotation_mismatch(self.name, self.annotation_kinds, survey.object_kinds)
            if why is not None:
                raise BadInputError(why)

    def check_classes(self, *, classes: Sequence[str]) -> None:
        """Raise :class:`BadInputError` if the label set found in the data cannot train this
        type (called with at least one class). Default: any non-empty set trains."""
        del classes

    @abc.abstractmethod
    def ground_truth(
        self,
        *,
        row: ExportRow,
        base: Example,
        feature: str,
        media_file: Path,
        hp: Hyperparameters,
    ) -> Truth:
        """Read the row's label into ground truth: ``base`` (split, media, image size already
        set) with this type's fields filled, or a reason to drop the row. ``row.objects`` holds
        the label's raw annotation objects for kinds the parser does not know. Raise
        :class:`BadInputError` for annotations that contradict their media."""

    @abc.abstractmethod
    def task(self, ctx: TaskContext) -> Task:
        """The model and task to train (:class:`lbtrain_trainer.tasks.base.Task`), for both
        ``hp.model_size`` values. Import torch inside this method, not at module level."""

    @abc.abstractmethod
    def evaluate(
        self,
        *,
        dataset: PreparedDataset,
        hp: Hyperparameters,
        model_run_id: str,
        pairs: Sequence[Pair],
        tune_pairs: Sequence[Pair],
    ) -> Evaluation:
        """Decisions, metrics and Labelbox rows for the evaluated rows; ``tune_pairs`` (the tune
        split) is empty unless ``tunes_thresholds``."""

    @abc.abstractmethod
    def synthetic_label(self, *, rng: random.Random, image_size: int) -> SyntheticLabel:
        """One synthetic data row that a small model learns in seconds on a CPU, drawn from
        ``rng`` alone (the demo, the fake Labelbox and the tests use it)."""

    def describe(self) -> str:
        """One line for ``lbtrain trainer types``: the first line of the class docstring."""
        return (type(self).__doc__ or "").strip().split("\n", 1)[0]
