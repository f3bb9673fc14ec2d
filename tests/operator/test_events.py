"""Event bodies: what `kubectl describe mr` shows, built without a cluster."""

from __future__ import annotations

import datetime as dt

from lbtrain.resources.models import Phase
from lbtrain_operator import reasons as r
from lbtrain_operator.events import COMPONENT, MAX_MESSAGE, event_body, event_type

RUN = {
    "apiVersion": "lbtrain.io/v1alpha1",
    "kind": "ModelRun",
    "metadata": {"name": "run-1", "namespace": "ml", "uid": "u-1", "resourceVersion": "42"},
}
NOW = dt.datetime(2026, 11, 27, 10, 0, 0, tzinfo=dt.UTC)


def test_an_event_names_the_run_and_the_operator() -> None:
    body = event_body(RUN, "Normal", "JobCreated", "Job run-1-train created", NOW)
    assert body["involvedObject"] == {
        "apiVersion": "lbtrain.io/v1alpha1",
        "kind": "ModelRun",
        "name": "run-1",
        "namespace": "ml",
        "uid": "u-1",
        "resourceVersion": "42",
    }
    assert body["metadata"] == {"generateName": "run-1.", "namespace": "ml"}
    assert (body["type"], body["reason"]) == ("Normal", "JobCreated")
    assert body["source"] == {"component": COMPONENT}
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-11-27T10:00:00Z"


def test_a_long_message_is_cut_to_what_the_api_server_accepts() -> None:
    body = event_body(RUN, "Warning", "Unschedulable", "x" * 5000, NOW)
    assert len(body["message"]) == MAX_MESSAGE
    assert body["message"].endswith("...")


def test_reasons_to_look_at_are_warnings_and_progress_is_normal() -> None:
    assert event_type(Phase.PENDING, r.UNSCHEDULABLE) == "Warning"
    assert event_type(Phase.PENDING, r.RETRYING) == "Warning"
    assert event_type(Phase.TRAINING, r.CRASH_LOOP_BACKOFF) == "Warning"
    assert event_type(Phase.TRAINING, r.FAILING) == "Warning"
    assert event_type(Phase.FAILED, r.OOM_KILLED) == "Warning"
    assert event_type(Phase.FAILED, r.CANCELLED) == "Warning"
    assert event_type(Phase.EXPORTING, r.STAGE_RUNNING) == "Normal"
    assert event_type(Phase.PENDING, r.CONTAINER_CREATING) == "Normal"
    assert event_type(Phase.SUCCEEDED, r.SUCCEEDED) == "Normal"
