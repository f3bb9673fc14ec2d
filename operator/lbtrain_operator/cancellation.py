"""Cancellation: what deleting a ModelRun does, decided on plain values.

A run deleted before it finished has its Job deleted and FAILED "Cancelled" queued for
Labelbox (never a status of lower rank than one already queued). Deletion does not wait out a
report backoff: the finalizer's own deadline bounds it instead. When Labelbox cannot be told,
the finalizer retries until `cancel_report_timeout_s` has passed since the deletion began, then
lets go with a Warning, so a Labelbox outage never blocks a deletion.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from lbtrain.resources.models import LabelboxStatus
from lbtrain.resources.status import ModelRunStatus
from lbtrain.timestamps import parse_optional
from lbtrain_operator import outbox, progress
from lbtrain_operator import reasons as r

RETRY_MIN_S = 1.0
RETRY_MAX_S = 10.0


@dataclass(frozen=True)
class Plan:
    """What a deletion does first: delete the Job (or not), then deliver `status`'s outbox."""

    delete_job: bool
    status: ModelRunStatus


def plan(status: ModelRunStatus) -> Plan:
    box = status.labelbox
    if not status.finished:
        new = progress.to_enqueue(outbox.last_queued(box), [LabelboxStatus.FAILED])
        box = outbox.enqueue(
            box,
            new,
            # every key, as every report carries (progress.metadata), so none stays stale
            {**dict.fromkeys(progress.METADATA_KEYS, ""), **box.metadata, "reason": r.CANCELLED},
            progress.error_message(r.CANCELLED, r.MSG_CANCELLED),
        )
    box = box.model_copy(update={"next_attempt_time": None})
    return Plan(delete_job=not status.finished, status=status.model_copy(update={"labelbox": box}))


@dataclass(frozen=True)
class GiveUp:
    """Stop trying: the deletion goes on without telling Labelbox."""

    reason: str
    message: str


@dataclass(frozen=True)
class RetryIn:
    """Try again in `seconds`; the deletion waits."""

    seconds: float
    error: str


def after_delivery(
    *,
    drained: bool,
    error: str | None,
    deletion_started: str | None,
    now: dt.datetime,
    timeout_s: float,
) -> GiveUp | RetryIn | None:
    """What follows one delivery attempt: done (None), retry, or give up."""
    if drained or error is None:
        return None
    started = parse_optional(deletion_started) or now
    spent = (now - started).total_seconds()
    if spent >= timeout_s:
        return GiveUp(r.LABELBOX_UNREACHABLE, r.MSG_LABELBOX_UNREACHABLE.format(detail=error))
    return RetryIn(max(RETRY_MIN_S, min(timeout_s - spent, RETRY_MAX_S)), error)
