"""Cancellation on plain values: what deleting a run does, and when the finalizer lets go."""

from __future__ import annotations

import datetime as dt

from lbtrain.resources.models import LabelboxStatus, Phase
from lbtrain.resources.status import LabelboxOutbox, ModelRunStatus
from lbtrain_operator import cancellation
from lbtrain_operator import reasons as r
from lbtrain_operator.cancellation import GiveUp, RetryIn

NOW = dt.datetime(2026, 12, 7, 3, 0, 0, tzinfo=dt.UTC)


def test_a_running_run_deletes_its_job_and_queues_failed_cancelled():
    status = ModelRunStatus(
        phase=Phase.TRAINING,
        labelbox=LabelboxOutbox(
            acknowledged=LabelboxStatus.TRAINING_MODEL,
            metadata={"phase": "Training"},
            next_attempt_time="2026-12-07T04:00:00Z",
        ),
    )
    planned = cancellation.plan(status)
    assert planned.delete_job
    box = planned.status.labelbox
    assert box.pending == [LabelboxStatus.FAILED]
    assert box.metadata["reason"] == r.CANCELLED
    assert box.error_message and "cancelled" in box.error_message
    assert box.next_attempt_time is None  # a deletion does not wait out a backoff


def test_a_finished_run_keeps_its_job_and_only_finishes_reporting():
    status = ModelRunStatus(
        phase=Phase.SUCCEEDED,
        labelbox=LabelboxOutbox(pending=[LabelboxStatus.COMPLETE]),
    )
    planned = cancellation.plan(status)
    assert not planned.delete_job
    assert planned.status.labelbox.pending == [LabelboxStatus.COMPLETE]  # no FAILED after it


def test_after_delivery_done_retry_or_give_up():
    started = "2026-12-07T02:59:00Z"  # 60 s ago
    done = cancellation.after_delivery(
        drained=True, error=None, deletion_started=started, now=NOW, timeout_s=120
    )
    assert done is None
    retry = cancellation.after_delivery(
        drained=False, error="503", deletion_started=started, now=NOW, timeout_s=120
    )
    assert retry == RetryIn(10.0, "503")
    near = cancellation.after_delivery(
        drained=False, error="503", deletion_started=started, now=NOW, timeout_s=62
    )
    assert near == RetryIn(2.0, "503")
    late = cancellation.after_delivery(
        drained=False, error="503", deletion_started=started, now=NOW, timeout_s=60
    )
    assert isinstance(late, GiveUp) and late.reason == r.LABELBOX_UNREACHABLE
    assert "503" in late.message
