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
