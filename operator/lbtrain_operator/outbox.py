"""The Labelbox outbox: what still has to be told to Labelbox, kept in the ModelRun status.

Reconciling only ever appends to `pending`; the sender takes the head, and on success moves it to
`acknowledged`. Both live in the API server, so a restarted operator resumes exactly where the
last one stopped, a Labelbox outage of any length only grows the wait (with capped exponential
backoff), and the order of statuses can never change. The functions here are pure: they take the
outbox and a time, and answer the new outbox.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from lbtrain.resources.models import LabelboxStatus, WireModel

LAST_ERROR_MAX = 500


class Outbox(WireModel):
    """`status.labelbox` of a ModelRun."""

    pending: list[LabelboxStatus] = Field(default_factory=list)
    desired: LabelboxStatus | None = None
    acknowledged: LabelboxStatus | None = None
    error_message: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Why a run waits (unschedulable, image pull, retrying): worth an update of its own, so a
    # Labelbox user sees it; and worth one more when it clears.
    notice: str | None = None
    acknowledged_notice: str | None = None
    attempts: int = 0
    last_error: str | None = None
    last_attempt_time: str | None = None
    next_attempt_time: str | None = None
    acknowledged_time: str | None = None

    def wire(self) -> dict[str, Any]:
        """For a merge patch: unset fields are sent as null, which removes them from the
        stored status (a cleared notice or a healed error must not linger)."""
        return self.model_dump(by_alias=True, mode="json")

    @property
    def last_queued(self) -> LabelboxStatus | None:
        return self.pending[-1] if self.pending else self.acknowledged

    @property
    def drained(self) -> bool:
        return not self.pending and (
            self.acknowledged is None
            or self.acknowledged.final
            or self.acknowledged_notice == self.notice
        )


@dataclass(frozen=True)
class Report:
    """One update_status call to make."""

    status: LabelboxStatus
    metadata: dict[str, Any]
    error_message: str | None
    notice: str | None = None


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def enqueue(
    box: Outbox,
    new: list[LabelboxStatus],
    meta: dict[str, Any],
    error: str | None,
    notice: str | None = None,
) -> Outbox:
    pending = [*box.pending, *new]
    return box.model_copy(
        update={
            "pending": pending,
            "desired": pending[-1] if pending else box.acknowledged,
            "metadata": meta,
            "notice": notice,
            "error_message": error if error is not None else box.error_message,
        }
    )


def due(box: Outbox, now: dt.datetime) -> Report | None:
    """The report to send now, if any: the head of the queue, or a refresh of a non-final
    acknowledged status whose notice (why the run waits) has changed."""
    if box.next_attempt_time and now < dt.datetime.fromisoformat(
        box.next_attempt_time.replace("Z", "+00:00")
    ):
        return None
    if box.pending:
        head = box.pending[0]
        error = box.error_message if head is LabelboxStatus.FAILED else None
        return Report(head, box.metadata, error, box.notice)
    if box.acknowledged is not None and not box.drained:
        return Report(box.acknowledged, box.metadata, None, box.notice)
    return None


def next_wakeup(box: Outbox, now: dt.datetime) -> float | None:
    """Seconds until a report is due, or None when nothing is left to send."""
    if box.drained:
        return None
    if not box.next_attempt_time:
        return 0.0
    when = dt.datetime.fromisoformat(box.next_attempt_time.replace("Z", "+00:00"))
    return max(0.0, (when - now).total_seconds())


def acknowledge(box: Outbox, sent: Report, now: dt.datetime) -> Outbox:
    pending = list(box.pending)
    if pending and pending[0] is sent.status:
        pending.pop(0)
    return box.model_copy(
        update={
            "pending": pending,
            "acknowledged": sent.status,
            "acknowledged_notice": sent.notice,
            "attempts": 0,
            "last_error": None,
            "last_attempt_time": iso(now),
            "next_attempt_time": None,
            "acknowledged_time": iso(now),
        }
    )


def backoff_s(attempts: int, initial: float, cap: float) -> float:
    return float(min(cap, initial * 2 ** max(0, attempts - 1)))


def failed(box: Outbox, error: str, now: dt.datetime, initial: float, cap: float) -> Outbox:
    attempts = box.attempts + 1
    wait = backoff_s(attempts, initial, cap)
    return box.model_copy(
        update={
            "attempts": attempts,
            "last_error": error[:LAST_ERROR_MAX],
            "last_attempt_time": iso(now),
            "next_attempt_time": iso(now + dt.timedelta(seconds=wait)),
        }
    )
