"""The model catalogue: which TrainingTemplate serves each name in Labelbox's Train Model
dropdown. One rule, used by the webhook (to answer `GET /models` and to record on a new
ModelRun the template it listed) and by the operator (to build a Job for a run made by hand, and
to mark the templates that lost a conflict).

Each TrainingTemplate is one entry: its Labelbox name (`spec.modelType`, the key Labelbox shows
and posts back, byte for byte) and its task (`spec.task`, the kind of model the trainer builds).
Several templates may serve one task ("Text classification — BERT base" and "— fast, small"),
each with its own image, resources and hyperparameters. The task defaults to the Labelbox name
when that is one of the trainer's model types, case-insensitively (`Text_multi_classification`
is the task `text_multi_classification`), so templates written before tasks existed keep
working; any other name is its own task, for a team's own trainer image.

Two templates that claim one Labelbox name in a namespace are a conflict. The older one (by
creationTimestamp, then by object name) keeps the name: a template created later can never take
the name away from the one Labelbox has been listing, and the answer does not depend on the
order in which a watch delivered the objects. The other is not listed; the operator says why on
its `Listed` condition and in a Warning event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from lbtrain.contract import MODEL_TYPES

# The TrainingTemplate condition the operator writes, and its reasons, paired with messages.
CONDITION_LISTED: Final = "Listed"
LISTED: Final = "Listed"
MSG_LISTED: Final = "Labelbox lists this template as {name!r} (task {task})"
NAME_CONFLICT: Final = "NameConflict"
MSG_NAME_CONFLICT: Final = (
    "TrainingTemplate {winner} already serves the Labelbox name {name!r} (it is older), so this "
    "template is not listed and no run is built from it; give it another spec.modelType or "
    "delete one of the two"
)


def task_for(labelbox_name: str, task: str | None) -> str:
    """The task a template trains: `task` when set, else the Labelbox name, lowercased when it
    is one of the trainer's model types."""
    if task:
        return task
    folded = labelbox_name.lower()
    return folded if folded in MODEL_TYPES else labelbox_name


@dataclass(frozen=True)
class Listing:
    """One TrainingTemplate as the catalogue sees it."""

    template: str  # the object's name
    labelbox_name: str  # spec.modelType
    task: str
    description: str = ""
    generation: int = 0
    created: str = ""  # metadata.creationTimestamp (RFC 3339, UTC: sorts as it orders)
    uid: str = ""

    @property
    def seniority(self) -> tuple[str, str]:
        """Sorts the template that keeps a contested name first (no timestamp sorts last)."""
        return (self.created or "~", self.template)


def listing_of(obj: Mapping[str, Any]) -> Listing | None:
    """The catalogue's view of a TrainingTemplate object; None without a usable name."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    name, labelbox_name = meta.get("name"), spec.get("modelType")
    if not isinstance(name, str) or not isinstance(labelbox_name, str) or not labelbox_name:
        return None
    task, description = spec.get("task"), spec.get("description")
    generation = meta.get("generation")
    created, uid = meta.get("creationTimestamp"), meta.get("uid")
    return Listing(
        template=name,
        labelbox_name=labelbox_name,
        task=task_for(labelbox_name, task if isinstance(task, str) else None),
        description=description if isinstance(description, str) else "",
        generation=generation if isinstance(generation, int) else 0,
        created=created if isinstance(created, str) else "",
        uid=uid if isinstance(uid, str) else "",
    )


@dataclass(frozen=True)
class Catalogue:
    """The Labelbox names of one namespace and the template serving each."""

    entries: Mapping[str, Listing] = field(default_factory=dict)  # Labelbox name -> template
    losers: Mapping[str, Listing] = field(default_factory=dict)  # template -> the winner

    @classmethod
    def of(cls, listings: Iterable[Listing]) -> Catalogue:
        entries: dict[str, Listing] = {}
        losers: dict[str, Listing] = {}
        for listing in sorted(listings, key=lambda item: item.seniority):
            winner = entries.setdefault(listing.labelbox_name, listing)
            if winner is not listing:
                losers[listing.template] = winner
        return cls(dict(sorted(entries.items())), losers)

    @classmethod
    def of_objects(cls, objects: Iterable[Mapping[str, Any]]) -> Catalogue:
        return cls.of(item for item in map(listing_of, objects) if item is not None)

    def serving(self, labelbox_name: str) -> Listing | None:
        return self.entries.get(labelbox_name)

    def names(self) -> frozenset[str]:
        return frozenset(self.entries)

    def models_answer(self) -> dict[str, dict[str, str]]:
        """`GET /models`: `{Labelbox name: {"description": ...}}`, sorted by name."""
        return {name: {"description": e.description} for name, e in self.entries.items()}

    def listed(self, listing: Listing) -> tuple[bool, str, str]:
        """(listed?, reason, message) for one template: its `Listed` condition."""
        winner = self.losers.get(listing.template)
        if winner is None:
            return True, LISTED, MSG_LISTED.format(name=listing.labelbox_name, task=listing.task)
        message = MSG_NAME_CONFLICT.format(winner=winner.template, name=listing.labelbox_name)
        return False, NAME_CONFLICT, message
