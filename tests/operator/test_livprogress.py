"""Live training progress, the pure rules: what a report may say, who may send it (the pod a
token is bound to must belong, through its Job, to the run the report names), what `kubectl get`
shows, and how the outbox carries progress to Labelbox without ever going backwards."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from lbtrain import contract
from lbtrain.resources.models import LabelboxStatus as S
from lbtrain_operator import livprogress as lp
from lbtrain_operator import outbox
from lbtrain_operator.progress import flat_metadata

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
RUN_ID = "clrun00000000000000000001"


def report(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "modelRunId": RUN_ID,
        "epoch": 3,
        "epochs": 10,
        "step": 41,
        "steps": 100,
        "trainLoss": 0.4321,
        "validationMetric": None,
        "validationValue": None,
        "examplesPerSecond": 120.5,
        "etaSeconds": 750.0,
        "measuredAt": "2026-01-01T11:59:59.250Z",
    }
    return {**base, **over}


def review(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "authenticated": True,
        "audiences": [contract.PROGRESS_AUDIENCE],
        "user": {
            "username": "system:serviceaccount:team-a:default",
            "extra": {lp.POD_NAME_EXTRA: ["run-a-train-x1"], lp.POD_UID_EXTRA: ["pod-uid-1"]},
        },
    }
    return {**base, **over}


def owned(kind: str, api_version: str, name: str, uid: str, own_uid: str) -> dict[str, Any]:
    ref = {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True}
    return {"metadata": {"name": "x", "uid": own_uid, "ownerReferences": [ref]}}


WHO = lp.Identity("team-a", "default", "run-a-train-x1", "pod-uid-1")
POD = owned("Job", "batch/v1", "run-a-train", "job-uid", "pod-uid-1")
JOB = owned("ModelRun", "lbtrain.io/v1alpha1", "run-a", "run-uid", "job-uid")
RUN = {"metadata": {"name": "run-a", "uid": "run-uid"}, "spec": {"modelRunId": RUN_ID}}


# --- who may report ----------------------------------------------------------------------------


def test_a_pod_bound_service_account_token_names_its_pod() -> None:
    assert lp.identity_of(review(), contract.PROGRESS_AUDIENCE) == WHO


@pytest.mark.parametrize(
    ("answer", "code", "reason"),
    [
        ({"authenticated": False}, 401, lp.TOKEN_REFUSED),
        ({"audiences": ["https://kubernetes.default.svc"]}, 401, lp.TOKEN_REFUSED),
        ({"user": {"username": "alice"}}, 403, lp.NOT_POD_BOUND),
        ({"user": {"username": "system:serviceaccount:team-a:default"}}, 403, lp.NOT_POD_BOUND),
    ],
)
def test_a_token_that_is_not_ours_or_not_bound_to_a_pod_is_refused(
    answer: dict[str, Any], code: int, reason: str
) -> None:
    got = lp.identity_of(review(**answer), contract.PROGRESS_AUDIENCE)
    assert isinstance(got, lp.Refusal) and (got.code, got.reason) == (code, reason)


def test_the_chain_pod_job_run_must_hold_for_the_run_the_report_names() -> None:
    assert lp.check_pod(WHO, POD) == ("run-a-train", "job-uid")
    assert lp.check_job(WHO, JOB, "job-uid") == ("run-a", "run-uid")
    assert lp.check_run(WHO, RUN, "run-uid", RUN_ID) is None


def test_a_report_for_another_run_is_refused() -> None:
    got = lp.check_run(WHO, RUN, "run-uid", "clother0000000000000000001")
    assert isinstance(got, lp.Refusal) and (got.code, got.reason) == (403, lp.OTHER_RUN)
    assert "run-a" in got.message and "clother" in got.message


@pytest.mark.parametrize(
    ("pod", "why"),
    [
        (None, lp.POD_GONE),  # deleted since
        (owned("Job", "batch/v1", "run-a-train", "job-uid", "pod-uid-2"), lp.POD_GONE),  # another
        ({"metadata": {"uid": "pod-uid-1"}}, lp.NOT_A_RUN_POD),  # a bare pod
        (owned("ReplicaSet", "apps/v1", "web", "rs", "pod-uid-1"), lp.NOT_A_RUN_POD),
    ],
)
def test_a_pod_that_is_gone_or_not_a_jobs_is_refused(pod: dict[str, Any] | None, why: str) -> None:
    got = lp.check_pod(WHO, pod)
    assert isinstance(got, lp.Refusal) and got.reason == why and got.code == 403


def test_a_job_that_no_model_run_controls_is_refused() -> None:
    plain_job = {"metadata": {"uid": "job-uid"}}
    for job, uid in [(None, "job-uid"), (plain_job, "job-uid"), (JOB, "other-job-uid")]:
        got = lp.check_job(WHO, job, uid)
        assert isinstance(got, lp.Refusal) and got.reason == lp.NOT_A_RUN_POD


def test_a_finished_run_takes_no_more_progress() -> None:
    done = {**RUN, "status": {"phase": "Succeeded"}}
    got = lp.check_run(WHO, done, "run-uid", RUN_ID)
    assert isinstance(got, lp.Refusal) and got.code == 409


# --- what a report may say ---------------------------------------------------------------------


def test_a_report_keeps_every_field_and_normalizes_its_time() -> None:
    got = lp.parse_report({**report(measuredAt="2026-01-01T11:59:59.25+00:00"), "x": 1}, T0)
    assert isinstance(got, dict)
    assert list(got) == list(contract.PROGRESS_FIELDS)
    assert got["measuredAt"] == "2026-01-01T11:59:59.250Z"


@pytest.mark.parametrize(
    "bad",
    [
        {"modelRunId": ""},
        {"epoch": 0},
        {"epoch": 11},
        {"step": 101},
        {"step": -1},
        {"epochs": "10"},
        {"epoch": True},
        {"trainLoss": float("nan")},
        {"etaSeconds": -5},
        {"examplesPerSecond": "fast"},
        {"validationMetric": "m" * 65},
        {"measuredAt": "yesterday"},
        {"measuredAt": "2026-01-01T13:00:00Z"},  # an hour ahead of the operator's clock
    ],
)
def test_a_malformed_report_is_refused(bad: dict[str, Any]) -> None:
    got = lp.parse_report(report(**bad), T0)
    assert isinstance(got, lp.Refusal) and got.code == 400


def test_not_an_object_is_refused() -> None:
    assert isinstance(lp.parse_report([1, 2], T0), lp.Refusal)


# --- what people see ---------------------------------------------------------------------------


def test_the_column_reads_epoch_percent_and_eta_as_text() -> None:
    assert lp.column_text(report()) == "epoch 3/10 · 41% · ETA 12m30s"
    assert lp.column_text(report(etaSeconds=None)) == "epoch 3/10 · 41%"
    assert lp.column_text(report(etaSeconds=2 * 86400 + 3600)) == "epoch 3/10 · 41% · ETA 2d01h"
    validated = report(validationMetric="accuracy", validationValue=0.81234)
    assert lp.column_text(validated) == "epoch 3/10 · 41% · accuracy 0.812 · ETA 12m30s"


def test_status_progress_has_the_numbers_describe_shows() -> None:
    got = lp.status_progress(report(), "pod-1", T0)
    assert got["text"] == "epoch 3/10 · 41% · ETA 12m30s"
    assert (got["percent"], got["eta"], got["pod"]) == (41.0, "12m30s", "pod-1")
    assert got["receivedAt"] == "2026-01-01T12:00:00.000Z"
    assert "validationValue" not in got and "modelRunId" not in got


def test_labelbox_gets_every_field_with_empty_strings_for_unknowns() -> None:
    got = lp.labelbox_progress(lp.status_progress(report(), "pod-1", T0))
    assert got is not None
    assert set(got) == set(contract.PROGRESS_FIELDS) - {"modelRunId"} | {"text"}
    assert got["validationValue"] == "" and got["epoch"] == 3
    flat = flat_metadata({"phase": "Training", "progress": got})
    assert flat["progress.epoch"] == "3" and flat["progress.trainLoss"] == "0.4321"
    assert all(isinstance(v, str) for v in flat.values())  # as the SDK types metadata


def test_only_a_newer_report_replaces_the_stored_one() -> None:
    assert lp.newer(None, report())
    assert lp.newer({"measuredAt": "2026-01-01T11:59:58.999Z"}, report())
    assert not lp.newer({"measuredAt": "2026-01-01T11:59:59.250Z"}, report())


# --- the outbox carries it ---------------------------------------------------------------------


def training_box(acknowledged: S | None = S.TRAINING_MODEL) -> outbox.Outbox:
    box = outbox.enqueue(outbox.Outbox(), [], {"phase": "Training"}, None)
    return box.model_copy(update={"acknowledged": acknowledged, "desired": acknowledged})


def prog(second: int) -> dict[str, Any]:
    return {"epoch": second, "measuredAt": f"2026-01-01T11:59:{second:02d}.000Z"}


def test_progress_makes_one_more_training_model_call_carrying_it() -> None:
    box = outbox.queue_progress(training_box(), prog(1), T0, 5)
    assert not outbox.drained(box)
    rep = outbox.next_report(box)
    assert rep is not None and rep.status is S.TRAINING_MODEL
    assert rep.metadata == {"phase": "Training", "progress": prog(1)}
    box = outbox.acknowledge(outbox.begin(box, rep), rep, T0)
    assert outbox.drained(box) and box.acknowledged_progress == prog(1)["measuredAt"]


def test_at_most_one_progress_per_interval_and_the_held_one_wakes_the_run() -> None:
    box = outbox.queue_progress(training_box(), prog(1), T0, 5)
    later = T0 + dt.timedelta(seconds=2)
    assert outbox.queue_progress(box, prog(2), later, 5) == box  # held back
    assert outbox.progress_wakeup(box, prog(2), later, 5) == 3.0
    after = T0 + dt.timedelta(seconds=5)
    assert outbox.queue_progress(box, prog(2), after, 5).progress == prog(2)
    assert outbox.progress_wakeup(box, prog(1), later, 5) is None  # nothing newer


def test_an_older_progress_never_replaces_a_newer_one() -> None:
    box = outbox.queue_progress(training_box(), prog(5), T0, 0)
    assert outbox.queue_progress(box, prog(4), T0 + dt.timedelta(seconds=9), 0) == box


@pytest.mark.parametrize("last", [S.PREPARING_DATA, S.COMPLETE, S.FAILED])
def test_no_progress_unless_training_model_is_the_last_status_queued(last: S) -> None:
    box = training_box(last)
    assert outbox.queue_progress(box, prog(1), T0, 0) == box


def test_a_final_status_queued_drops_progress_not_yet_sent() -> None:
    box = outbox.queue_progress(training_box(), prog(1), T0, 0)
    box = outbox.enqueue(box, [S.COMPLETE], {"phase": "Succeeded"}, None)
    rep = outbox.next_report(box)
    assert rep is not None and rep.status is S.COMPLETE and "progress" not in rep.metadata
    box = outbox.acknowledge(outbox.begin(box, rep), rep, T0)
    assert outbox.drained(box) and outbox.next_report(box) is None
    assert outbox.queue_progress(box, prog(2), T0 + dt.timedelta(hours=1), 0) == box


def test_progress_rides_on_a_pending_training_model_too() -> None:
    box = outbox.enqueue(training_box(S.PREPARING_DATA), [S.TRAINING_MODEL], {"p": "T"}, None)
    box = outbox.queue_progress(box, prog(1), T0, 0)
    rep = outbox.next_report(box)
    assert rep is not None and rep.status is S.TRAINING_MODEL and rep.progress_at
    assert rep.metadata["progress"] == prog(1)


# --- the Job the pod reports from --------------------------------------------------------------


def test_with_a_progress_url_the_train_stage_alone_gets_a_progress_token_and_no_api_rights() -> (
    None
):
    from lbtrain_operator.jobspec import PROGRESS_TOKEN_VOLUME, build_job
    from lbtrain_operator.settings import Settings

    from .builders import run, template

    url = "http://lbtrain-operator-progress.lbtrain.svc:8082/progress"
    job = build_job(run(), "uid-1", template(progressIntervalSeconds=7), Settings(progress_url=url))
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False  # still no Kubernetes API token
    [volume] = [v for v in pod["volumes"] if v["name"] == PROGRESS_TOKEN_VOLUME]
    assert volume["projected"]["sources"] == [
        {
            "serviceAccountToken": {
                "audience": contract.PROGRESS_AUDIENCE,
                "expirationSeconds": 600,
                "path": "token",
            }
        }
    ]
    [train] = pod["containers"]
    env = {e["name"]: e.get("value") for e in train["env"]}
    assert env[contract.ENV_PROGRESS_URL] == url
    assert env[contract.ENV_PROGRESS_TOKEN_FILE] == contract.PROGRESS_TOKEN_FILE
    assert env[contract.ENV_PROGRESS_INTERVAL_S] == "7"
    mounts = {m["name"]: m for m in train["volumeMounts"]}
    assert mounts[PROGRESS_TOKEN_VOLUME]["mountPath"] == contract.PROGRESS_TOKEN_DIR
    assert mounts[PROGRESS_TOKEN_VOLUME]["readOnly"] is True
    for stage in pod["initContainers"]:  # export and prepare neither report nor hold the token
        assert PROGRESS_TOKEN_VOLUME not in {m["name"] for m in stage["volumeMounts"]}
        assert contract.ENV_PROGRESS_URL not in {e["name"] for e in stage["env"]}
    # Without a progress URL nothing of it is there.
    plain = build_job(run(), "uid-1", template(), Settings())["spec"]["template"]["spec"]
    assert PROGRESS_TOKEN_VOLUME not in {v["name"] for v in plain["volumes"]}
    assert contract.ENV_PROGRESS_URL not in {e["name"] for e in plain["containers"][0]["env"]}
