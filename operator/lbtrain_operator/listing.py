"""The status the operator keeps on each TrainingTemplate: its task and its `Listed` condition
(does Labelbox list it, and if not, which template keeps its name), so `kubectl get tt` shows a
conflict that the webhook resolves silently. Pure: the handler only compares and patches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lbtrain.resources.catalogue import CONDITION_LISTED, NAME_CONFLICT, Catalogue, Listing


def template_status(
    catalogue: Catalogue, listing: Listing, current: Mapping[str, Any] | None, now: str
) -> dict[str, Any] | None:
    """The template's new `status`, or None when what it holds is already right."""
    current = current or {}
    listed, reason, message = catalogue.listed(listing)
    value = "True" if listed else "False"
    previous: Mapping[str, Any] = next(
        (c for c in current.get("conditions") or [] if c.get("type") == CONDITION_LISTED), {}
    )
    condition = {
        "type": CONDITION_LISTED,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": listing.generation,
        "lastTransitionTime": (
            previous.get("lastTransitionTime")
            if previous.get("status") == value and previous.get("lastTransitionTime")
            else now
        ),
    }
    wanted = {
        "task": listing.task,
        "observedGeneration": listing.generation,
        "conditions": [condition],
    }
    unchanged = (
        current.get("task") == listing.task
        and current.get("observedGeneration") == listing.generation
        and {k: v for k, v in previous.items() if k != "lastTransitionTime"}
        == {k: v for k, v in condition.items() if k != "lastTransitionTime"}
    )
    return None if unchanged else wanted


def newly_conflicted(current: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Whether this change marks the template as losing a name it did not lose before (worth a
    Warning event, once)."""

    def conflicted(status: Mapping[str, Any] | None) -> bool:
        return any(
            c.get("type") == CONDITION_LISTED and c.get("reason") == NAME_CONFLICT
            for c in (status or {}).get("conditions") or []
        )

    return conflicted(wanted) and not conflicted(current)
