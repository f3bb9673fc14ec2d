"""The Labelbox outbox: what still has to be told to Labelbox, kept in the ModelRun status.

Reconciling only ever appends to `pending`, above everything already queued, sent or being
sent. A status leaves `pending` for `sending` (`begin`), and `sending` for `acknowledged` once
Labelbox answered (`acknowledge`); a failed call keeps it in `sending` and backs off
(`failed`), so a retry repeats exactly the same call. The one exception is a call Labelbox
rejects as *invalid* (a GraphQL validation error, not a transport failure): repeating it word
for word would block every later status, COMPLETE included, so `rejected` replaces it with the
same status and error message carrying flat string metadata, then none (`metadata_form`), and
later reports keep that form.

Live training progress (docs/progress.md) rides on TRAINING_MODEL: `queue_progress` puts a
report in `progress` (at most one per interval, only while TRAINING_MODEL is the last status
queued), every TRAINING_MODEL report carries it as the metadata key `progress`, and the outbox
is not drained until Labelbox acknowledged it, so a newer progress is one more TRAINING_MODEL
call: the same rank, never after a final status, and a final status queued first wins. The
functions here are pure: they take
the outbox and a time, and answer the new outbox. *When* each new outbox must be stored
relative to the call is `delivery`'s business.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from lbtrain.resources.models import LabelboxStatus
from lbtrain.resources.status import LabelboxOutbox, SentReport
from lbtrain.timestamps import iso, parse_time
from lbtrain_operator.progress import flat_metadata

LAST_ERROR_MAX = 500
# The forms of metadata tried in turn when Labelbox rejects a report as invalid.
METADATA_FORMS = ("full", "flat", "none")
Outbox = LabelboxOutbox


@dataclass(frozen=True)
class Report:
    """One update_status call to make."""

    status: LabelboxStatus
    metadata: dict[str, Any]
    error_message: str | None
    notice: str | None = None
    progress_at: str | None = None

    def sent(self) -> SentReport:
        return SentReport(
            status=self.status,
            metadata=self.metadata,
            error_message=self.error_message,
            notice=self.notice,
            progress_at=self.progress_at,
        )

    @classmethod
    def of(cls, sent: SentReport) -> Report:
        return cls(
            sent.status, dict(sent.metadata), sent.error_message, sent.notice, sent.progress_at
        )


def shaped(meta: dict[str, Any], form: str) -> dict[str, Any]:
    """The metadata in one of `METADATA_FORMS`."""
    if form == "none":
        return {}
    if form == "flat":
        return dict(flat_metadata(meta))
    return meta


def last_queued(box: Outbox) -> LabelboxStatus | None:
    """The highest status Labelbox has, may have, or will get: the floor for what comes next."""
    if box.pending:
        return box.pending[-1]
    if box.sending is not None:
        return box.sending.status
    return box.acknowledged


def progress_at(box: Outbox) -> str | None:
    """The `measuredAt` of the training progress queued, if any."""
    stamp = (box.progress or {}).get("measuredAt")
    return stamp if isinstance(stamp, str) else None


def drained(box: Outbox) -> bool:
    """Labelbox has everything: nothing queued, nothing in flight, no notice or training
    progress to tell."""
    return (
        not box.pending
        and box.sending is None
        and (
            box.acknowledged is None
            or box.acknowledged.final
            or (
                box.acknowledged_notice == box.notice
                and (
                    box.acknowledged is not LabelboxStatus.TRAINING_MODEL
                    or box.acknowledged_progress == progress_at(box)
                )
            )
        )
    )


def queue_progress(
    box: Outbox, progress: dict[str, Any] | None, now: dt.datetime, interval_s: float
) -> Outbox:
    """Queue a newer training progress for Labelbox: only while TRAINING_MODEL is the last
    status queued (never once a final one is), and at most one per `interval_s`."""
    if progress is None or last_queued(box) is not LabelboxStatus.TRAINING_MODEL:
        return box
    stamp = progress.get("measuredAt")
    if not isinstance(stamp, str) or stamp <= (progress_at(box) or ""):
        return box
    if box.progress_queued_time and now < parse_time(box.progress_queued_time) + dt.timedelta(
        seconds=interval_s
    ):
        return box
    return box.model_copy(update={"progress": dict(progress), "progress_queued_time": iso(now)})


def progress_wakeup(
    box: Outbox, progress: dict[str, Any] | None, now: dt.datetime, interval_s: float
) -> float | None:
    """Seconds until a newer progress held back by the interval may be queued (None: none is
    held back)."""
    stamp = (progress or {}).get("measuredAt")
    if last_queued(box) is not LabelboxStatus.TRAINING_MODEL or not isinstance(stamp, str):
        return None
    if stamp <= (progress_at(box) or "") or not box.progress_queued_time:
        return None
    until = parse_time(box.progress_queued_time) + dt.timedelta(seconds=interval_s)
    return max(0.0, (until - now).total_seconds())


def _with_progress(box: Outbox, status: LabelboxStatus) -> tuple[dict[str, Any], str | None]:
    """The metadata a report of `status` carries, and the progress it tells (if any)."""
    if status is not LabelboxStatus.TRAINING_MODEL or box.progress is None:
        return shaped(box.metadata, box.metadata_form), None
    meta = {**box.metadata, "progress": box.progress}
    return shaped(meta, box.metadata_form), progress_at(box)


def enqueue(
    box: Outbox,
    new: list[LabelboxStatus],
    meta: dict[str, Any],
    error: str | None,
    notice: str | None = None,
) -> Outbox:
    """Queue `new` (already filtered by `progress.to_enqueue` against `last_queued`) with the
    metadata, error message and notice the next reports carry."""
    pending = [*box.pending, *new]
    return box.model_copy(
        update={
            "pending": pending,
            "desired": pending[-1] if pending else last_queued(box),
            "metadata": meta,
            "notice": notice,
            "error_message": error if error is not None else box.error_message,
        }
    )


def next_report(box: Outbox) -> Report | None:
    """The call to make next, whatever the time: the one in flight (again, word for word), the
    head of the queue, or a refresh of a non-final acknowledged status whose notice changed."""
    if box.sending is not None:
        return Report.of(box.sending)
    if box.pending:
        head = box.pending[0]
        error = box.error_message if head is LabelboxStatus.FAILED else None
        meta, stamp = _with_progress(box, head)
        return Report(head, meta, error, box.notice, stamp)
    if box.acknowledged is not None and not drained(box):
        meta, stamp = _with_progress(box, box.acknowledged)
        return Report(box.acknowledged, meta, None, box.notice, stamp)
    return None


def backing_off(box: Outbox, now: dt.datetime) -> bool:
    return bool(box.next_attempt_time) and now < parse_time(box.next_attempt_time or "")


def due(box: Outbox, now: dt.datetime) -> Report | None:
    """The call to make now, if any (none while a failed one backs off)."""
    return None if backing_off(box, now) else next_report(box)


def next_wakeup(box: Outbox, now: dt.datetime) -> float | None:
    """Seconds until a report is due, or None when nothing is left to send."""
    if drained(box):
        return None
    if not box.next_attempt_time:
        return 0.0
    return max(0.0, (parse_time(box.next_attempt_time) - now).total_seconds())


def begin(box: Outbox, report: Report) -> Outbox:
    """`report` is about to be sent: it leaves the queue and becomes the one in flight."""
    pending = list(box.pending)
    if box.sending is None and pending and pending[0] is report.status:
        pending.pop(0)
    return box.model_copy(update={"pending": pending, "sending": report.sent()})


def acknowledge(box: Outbox, sent: Report, now: dt.datetime) -> Outbox:
    """Labelbox took `sent`."""
    return box.model_copy(
        update={
            "sending": None,
            "acknowledged": sent.status,
            "acknowledged_notice": sent.notice,
            "acknowledged_progress": sent.progress_at or box.acknowledged_progress,
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
    """Labelbox did not take the call in flight: keep it, and wait before trying again."""
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


def rejected(box: Outbox, error: str, now: dt.datetime, initial: float, cap: float) -> Outbox:
    """Labelbox rejected the call in flight as invalid: make the next call the same status and
    error message with the next, plainer form of its metadata (flat strings, then none), due at
    once. A call that had no metadata left is not about metadata: it backs off as `failed`."""
    sending = box.sending
    at = METADATA_FORMS.index(box.metadata_form) if box.metadata_form in METADATA_FORMS else 0
    if sending is None or not sending.metadata or at + 1 >= len(METADATA_FORMS):
        return failed(box, error, now, initial, cap)
    form = METADATA_FORMS[at + 1]
    plainer = sending.model_copy(update={"metadata": shaped(sending.metadata, form)})
    return box.model_copy(
        update={
            "sending": plainer,
            "metadata_form": form,
            "metadata_rejected": error[:LAST_ERROR_MAX],
            "attempts": box.attempts + 1,
            "last_error": error[:LAST_ERROR_MAX],
            "last_attempt_time": iso(now),
            "next_attempt_time": None,
        }
    )
