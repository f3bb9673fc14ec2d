"""Crash-safe delivery of Labelbox statuses: every call is on record before it is made.

The guarantee (docs/operator.md, "Restarts"): across any number of operator crashes at any
moment, Labelbox never receives a status of lower rank than one it already received for the
run, and nothing after COMPLETE or FAILED; a status reaches it again at most once per crash
(the call in flight when the operator died), and a repeated final status carries the same
metadata and error message as the first time.

Why it holds, by construction rather than by timing:

1. *Write ahead.* `next_step` answers `Send(report)` only when the *stored* outbox already holds
   that report as `sending`; otherwise it answers `Store` first. So the stored outbox's
   `last_queued` always ranks at least as high as anything Labelbox has received or may
   still receive.
2. *A restart knows only what is stored.* Everything a restarted operator queues ranks above
   the stored `last_queued` (`progress.to_enqueue`), and the one call it may repeat is the
   stored `sending`, kept whole (status, metadata, error message), so it repeats word for word.
3. *One call in flight per run.* `sending` is replaced only after Labelbox answered; the
   reporter also serializes the calls of one model run, even a call whose pass was cancelled.
4. *Final is final.* A final status queued, in flight or acknowledged stops the queue.
5. *An invalid call is replaced, never repeated.* When Labelbox rejects the call in flight as
   invalid (`outbox.rejected`), it did not take it; its replacement (the same status and error
   message, plainer metadata) is a new `sending`, so rule 1 stores it before it is made.

What is *not* stored at once is the acknowledgement of a non-final status: it rides on the
run's next status write, or is written on its own `ack_store_delay_s` after it came
(`--report-wait`, 2 s), whichever is first. Until then a crash costs one repeat of it, which
the guarantee allows. A final acknowledgement is stored at once: it is what lets the run's
daemon finish, and a finished run must not be re-reported by every restart.

Everything here but `deliver` is pure; `deliver` runs the steps against a `store` and a `send`
that the caller provides (the API server and the SDK in `reconcile`; in-memory ones in the
property tests, which crash it at every step).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from lbtrain.resources.status import LabelboxOutbox, ModelRunStatus
from lbtrain.timestamps import parse_time
from lbtrain_operator import outbox
from lbtrain_operator.outbox import Report


@dataclass
class RunState:
    """A run's status as its daemon holds it: `status` is the truth (it may be ahead of the
    server: an acknowledgement not stored yet, a write that failed), `stored` what the server
    last confirmed."""

    status: ModelRunStatus
    stored: ModelRunStatus

    @classmethod
    def from_status(cls, raw: dict[str, Any] | None) -> RunState:
        status = ModelRunStatus.model_validate(raw or {})
        return cls(status=status, stored=status.model_copy(deep=True))

    @property
    def unsaved(self) -> bool:
        return self.status != self.stored


@dataclass(frozen=True)
class Store:
    """Store the status, with this outbox, before anything else happens."""

    box: LabelboxOutbox


@dataclass(frozen=True)
class Send:
    """Make this call; the stored outbox already says it may have been made."""

    report: Report


Step = Store | Send


def next_step(box: LabelboxOutbox, stored: LabelboxOutbox, now: dt.datetime) -> Step | None:
    """What to do next about Labelbox, given the outbox in memory and the one stored."""
    report = outbox.due(box, now)
    if report is None:
        return None
    if box.sending is None:
        return Store(outbox.begin(box, report))
    if stored.sending != box.sending:  # written ahead in memory only (its write failed)
        return Store(box)
    return Send(report)


# What an acknowledgement changes in the outbox; the rest of the status is unaffected by it.
_DELIVERY_FIELDS = frozenset(
    {
        "sending",
        "acknowledged",
        "acknowledged_notice",
        "acknowledged_time",
        "attempts",
        "last_error",
        "last_attempt_time",
        "next_attempt_time",
    }
)


def _without_delivery(status: ModelRunStatus) -> ModelRunStatus:
    box = status.labelbox.model_copy(update=dict.fromkeys(_DELIVERY_FIELDS))
    return status.model_copy(update={"labelbox": box})


def only_acknowledgement(status: ModelRunStatus, stored: ModelRunStatus) -> bool:
    """Whether all that `status` adds to `stored` is Labelbox's answer to the stored call."""
    return (
        stored.labelbox.sending is not None
        and status.labelbox.sending is None
        and _without_delivery(status) == _without_delivery(stored)
    )


def _ack_store_at(status: ModelRunStatus, ack_store_delay_s: float) -> dt.datetime | None:
    stamp = status.labelbox.acknowledged_time
    if not stamp:
        return None
    return parse_time(stamp) + dt.timedelta(seconds=ack_store_delay_s)


def store_now(
    status: ModelRunStatus, stored: ModelRunStatus, now: dt.datetime, ack_store_delay_s: float
) -> bool:
    """Whether the status must be written now: anything but a fresh non-final acknowledgement
    (which may wait for the next write, up to `ack_store_delay_s`)."""
    if status == stored:
        return False
    if not only_acknowledgement(status, stored):
        return True
    acked = status.labelbox.acknowledged
    if acked is None or acked.final:
        return True
    when = _ack_store_at(status, ack_store_delay_s)
    return when is None or now >= when


def wakeup(
    status: ModelRunStatus, stored: ModelRunStatus, now: dt.datetime, ack_store_delay_s: float
) -> float | None:
    """Seconds until Labelbox needs a call or an acknowledgement needs storing (None: never)."""
    wake = outbox.next_wakeup(status.labelbox, now)
    if status != stored:
        when = _ack_store_at(status, ack_store_delay_s)
        ack = 0.0 if when is None else max(0.0, (when - now).total_seconds())
        wake = ack if wake is None else min(wake, ack)
    return wake


async def deliver(
    state: RunState,
    store: Callable[[RunState], Awaitable[None]],
    send: Callable[[LabelboxOutbox, Report], Awaitable[LabelboxOutbox]],
    clock: Callable[[], dt.datetime],
    ack_store_delay_s: float,
) -> None:
    """Make every call that is due, each stored ahead; then store what must be stored.

    `store(state)` writes `state.status` and, once the server confirmed it, sets
    `state.stored`; `send(box, report)` makes the call and answers the outbox after it
    (acknowledged, or backed off). Either may raise (or the task be cancelled) at any point:
    `state` then holds what is known, and a later pass, or a restarted operator with only
    what was stored, carries on safely.
    """
    # Each call acknowledged shortens the queue, and a rejected one is replaced by a plainer one
    # at most twice (`outbox.rejected`); the bound is a guard, not a limit.
    for _ in range(2 * len(state.status.labelbox.pending) + 8):
        step = next_step(state.status.labelbox, state.stored.labelbox, clock())
        if step is None:
            break
        if isinstance(step, Store):
            state.status = state.status.model_copy(update={"labelbox": step.box})
            await store(state)
            continue
        box = await send(state.status.labelbox, step.report)
        state.status = state.status.model_copy(update={"labelbox": box})
        if box.sending is not None and box.next_attempt_time:  # not taken: it backs off
            break
    if store_now(state.status, state.stored, clock(), ack_store_delay_s):
        await store(state)
