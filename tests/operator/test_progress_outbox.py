"""Labelbox statuses from progress, and the outbox that delivers them in order."""

from __future__ import annotations

import datetime as dt

from lbtrain.resources.models import LabelboxStatus as S
from lbtrain.resources.models import Phase
from lbtrain_operator import outbox, progress
from lbtrain_operator import reasons as r
from lbtrain_operator.podstate import Observation

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def obs(phase: Phase, reason: str = "", stage: str | None = None) -> Observation:
    return Observation(phase, reason, "msg", furthest_stage=stage)


def test_statuses_follow_the_stages() -> None:
    assert progress.statuses_for(obs(Phase.PENDING, r.WAITING_FOR_POD)) == []
    assert progress.statuses_for(obs(Phase.EXPORTING, stage="export")) == [S.EXPORTING_DATA]
    assert progress.statuses_for(obs(Phase.TRAINING, stage="train")) == [
        S.EXPORTING_DATA,
        S.PREPARING_DATA,
        S.TRAINING_MODEL,
    ]
    assert progress.statuses_for(obs(Phase.SUCCEEDED, stage="train"))[-1] is S.COMPLETE
    assert progress.statuses_for(obs(Phase.FAILED, r.BAD_INPUT, "prepare")) == [
        S.EXPORTING_DATA,
        S.PREPARING_DATA,
        S.FAILED,
    ]
    assert progress.statuses_for(obs(Phase.FAILED, r.TEMPLATE_MISSING)) == [S.FAILED]


def test_waiting_with_a_visible_reason_shows_the_first_step() -> None:
    assert progress.statuses_for(obs(Phase.PENDING, r.UNSCHEDULABLE)) == [S.EXPORTING_DATA]


def test_never_backwards_and_nothing_after_a_final() -> None:
    assert progress.to_enqueue(S.TRAINING_MODEL, [S.EXPORTING_DATA, S.PREPARING_DATA]) == []
    assert progress.to_enqueue(
        S.PREPARING_DATA, [S.EXPORTING_DATA, S.PREPARING_DATA, S.TRAINING_MODEL]
    ) == [S.TRAINING_MODEL]
    assert progress.to_enqueue(S.COMPLETE, [S.FAILED]) == []
    assert progress.to_enqueue(S.FAILED, [S.EXPORTING_DATA]) == []
    assert progress.to_enqueue(None, [S.FAILED]) == [S.FAILED]


def test_error_message_fits_255_and_keeps_the_reason() -> None:
    text = progress.error_message("OOMKilled", "x" * 1000)
    assert len(text) == 255 and text.startswith("OOMKilled: ")
    assert progress.error_message("Cancelled", "short") == "Cancelled: short"


def test_outbox_sends_in_order_and_backs_off_on_failure() -> None:
    box = outbox.enqueue(outbox.Outbox(), [S.EXPORTING_DATA, S.PREPARING_DATA], {"job": "j"}, None)
    first = outbox.due(box, T0)
    assert first is not None and first.status is S.EXPORTING_DATA
    box = outbox.failed(outbox.begin(box, first), "502 Bad Gateway", T0, initial=2, cap=300)
    assert outbox.due(box, T0 + dt.timedelta(seconds=1)) is None
    assert outbox.next_wakeup(box, T0) == 2.0
    box = outbox.failed(box, "502", T0, initial=2, cap=300)
    assert (box.attempts, box.next_attempt_time) == (2, "2026-01-01T00:00:04Z")
    again = outbox.due(box, T0 + dt.timedelta(seconds=5))
    assert again is not None and again.status is S.EXPORTING_DATA
    box = outbox.acknowledge(outbox.begin(box, again), again, T0)
    assert (box.acknowledged, box.pending, box.attempts) == (
        S.EXPORTING_DATA,
        [S.PREPARING_DATA],
        0,
    )
    nxt = outbox.due(box, T0)
    assert nxt is not None and nxt.status is S.PREPARING_DATA


def test_backoff_is_capped() -> None:
    assert outbox.backoff_s(30, initial=2, cap=300) == 300


def test_failed_status_carries_the_error_message_only_on_failed() -> None:
    box = outbox.enqueue(outbox.Outbox(), [S.EXPORTING_DATA, S.FAILED], {}, "BadInput: no labels")
    head = outbox.due(box, T0)
    assert head is not None and head.error_message is None
    box = outbox.acknowledge(outbox.begin(box, head), head, T0)
    tail = outbox.due(box, T0)
    assert tail is not None and (tail.status, tail.error_message) == (
        S.FAILED,
        "BadInput: no labels",
    )
    box = outbox.acknowledge(outbox.begin(box, tail), tail, T0)
    assert outbox.drained(box) and outbox.due(box, T0) is None


def test_a_waiting_notice_is_sent_once_and_its_clearing_once() -> None:
    box = outbox.enqueue(outbox.Outbox(), [S.EXPORTING_DATA], {"m": 1}, None, "Insufficient gpu")
    report = outbox.due(box, T0)
    assert report is not None and report.notice == "Insufficient gpu"
    box = outbox.acknowledge(outbox.begin(box, report), report, T0)
    assert outbox.due(box, T0) is None
    box = outbox.enqueue(box, [], {"m": 2}, None, "Insufficient gpu")  # metadata alone: no resend
    assert outbox.due(box, T0) is None
    box = outbox.enqueue(box, [], {"m": 3}, None, "pulling image")
    refresh = outbox.due(box, T0)
    assert refresh is not None and refresh.status is S.EXPORTING_DATA
    assert refresh.metadata == {"m": 3}
    box = outbox.acknowledge(outbox.begin(box, refresh), refresh, T0)
    box = outbox.enqueue(box, [], {"m": 4}, None, None)
    cleared = outbox.due(box, T0)
    assert cleared is not None and cleared.notice is None
    box = outbox.acknowledge(outbox.begin(box, cleared), cleared, T0)
    assert outbox.drained(box)


def test_outbox_round_trips_through_the_wire_format() -> None:
    box = outbox.enqueue(outbox.Outbox(), [S.EXPORTING_DATA], {"a": 1}, None)
    wire = box.wire()
    assert wire["pending"] == ["EXPORTING_DATA"] and wire["desired"] == "EXPORTING_DATA"
    assert outbox.Outbox.model_validate(wire) == box
