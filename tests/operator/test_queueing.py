"""Queueing through Kueue on plain values: the queued Job, the queue a run picks, and what a
queued run says (Kueue's own message, its place, a preemption that is not a failure)."""

from __future__ import annotations

from typing import Any

from lbtrain.resources.models import LabelboxStatus, Phase
from lbtrain_operator import progress, queueing
from lbtrain_operator import reasons as r
from lbtrain_operator.admission import Admitted, admit
from lbtrain_operator.settings import Settings

from .builders import run, template_object

# Kueue v0.17.0's words (pkg/scheduler/flavorassigner): what its scheduler writes on a Workload
# that waits for quota another Workload holds.
WAITING = (
    "couldn't assign flavors to pod set main: insufficient unused quota for memory in flavor "
    "default-flavor, 1Gi more needed"
)


def admitted(
    run_queue: str | None = None, template_queue: str | None = None, default: str = ""
) -> dict[str, Any]:
    tmpl = template_object("image")
    if template_queue:
        tmpl["spec"]["queueName"] = template_queue
    templates = [tmpl]
    mr = run()
    body = {"metadata": {"name": "mr-1"}, "spec": {"queueName": run_queue} if run_queue else {}}
    got = admit(mr, "uid-1", templates, Settings(default_queue=default), body)
    assert isinstance(got, Admitted)
    return got.job


def test_without_a_queue_the_job_is_exactly_as_before() -> None:
    plain = admitted()
    assert queueing.QUEUE_LABEL not in plain["metadata"]["labels"]
    assert "suspend" not in plain["spec"]
    assert queueing.queued_job(plain, None) is plain
    assert not queueing.held({**plain, "spec": {**plain["spec"], "suspend": True}})


def test_a_queued_job_is_labelled_with_its_local_queue_and_created_suspended() -> None:
    plain, queued = admitted(), admitted(template_queue="team-gpus")
    assert queued["metadata"]["labels"] == {
        **plain["metadata"]["labels"],
        queueing.QUEUE_LABEL: "team-gpus",
    }
    assert queued["spec"]["suspend"] is True
    # Nothing else changes: Kueue sizes the Workload from the pod template as built.
    assert {k: v for k, v in queued["spec"].items() if k != "suspend"} == plain["spec"]
    assert queueing.queue_of(queued) == "team-gpus"


def test_the_run_overrides_the_template_which_overrides_the_default() -> None:
    label = queueing.QUEUE_LABEL
    assert admitted(default="dflt")["metadata"]["labels"][label] == "dflt"
    assert admitted("mine", "tmpl", "dflt")["metadata"]["labels"][label] == "mine"
    assert admitted(None, "tmpl", "dflt")["metadata"]["labels"][label] == "tmpl"


def job(suspend: bool = True, failed: int = 0, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "mr-1-train",
            "uid": "job-uid",
            "labels": {queueing.QUEUE_LABEL: "user-queue"},
        },
        "spec": {"suspend": suspend},
        "status": {"failed": failed, **status},
    }


def workload(*conditions: dict[str, Any], owner: str = "job-uid") -> dict[str, Any]:
    return {
        "metadata": {
            "name": "job-mr-1-train-3f2a1",
            "labels": {queueing.JOB_UID_LABEL: owner},
            "ownerReferences": [{"kind": "Job", "name": "mr-1-train", "uid": owner}],
        },
        "status": {"conditions": list(conditions)},
    }


def cond(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


PENDING = cond("QuotaReserved", "False", "Pending", WAITING)


def pending_list(*names: str) -> dict[str, Any]:
    """The visibility API's answer: the LocalQueue's pending Workloads, in order."""
    return {
        "items": [
            {"metadata": {"name": n}, "positionInLocalQueue": i, "localQueueName": "user-queue"}
            for i, n in enumerate(names)
        ]
    }


def test_held_only_while_suspended_with_a_queue_and_not_finished() -> None:
    assert queueing.held(job())
    assert not queueing.held(job(suspend=False))  # admitted: the pods tell the rest
    done = job(conditions=[{"type": "Complete", "status": "True"}])
    assert not queueing.held(done)
    assert queueing.workload_selector(job()) == f"{queueing.JOB_UID_LABEL}=job-uid"


def test_a_waiting_run_shows_kueues_message_and_its_place() -> None:
    wl = workload(PENDING)
    obs = queueing.observe_queued(job(), wl, pending_list("other", wl["metadata"]["name"]))
    assert (obs.phase, obs.reason) == (Phase.PENDING, r.QUEUED)
    assert obs.message == (
        f"waiting in Kueue's LocalQueue user-queue: {WAITING} (position 2 in the queue)"
    )
    # The visibility API not served (or not listing it): the place is left out, nothing else.
    for pending in (None, pending_list("other")):
        assert queueing.observe_queued(job(), wl, pending).message == (
            f"waiting in Kueue's LocalQueue user-queue: {WAITING}"
        )


def test_the_workload_is_the_one_the_job_owns() -> None:
    mine, stale = workload(PENDING), workload(owner="old-job-uid")
    assert queueing.workload_of(job(), [stale, mine]) == mine
    assert queueing.workload_of(job(), [stale]) is None


def test_before_kueue_made_a_workload_and_when_none_can_be_read() -> None:
    assert queueing.observe_queued(job(), None, None).message.endswith(r.MSG_QUEUED_NO_WORKLOAD)
    obs = queueing.observe_queued(job(), None, None, unreadable="workloads is forbidden")
    assert obs.reason == r.QUEUED
    assert "cannot read Kueue's Workloads (workloads is forbidden)" in obs.message


def test_quota_reserved_but_admission_checks_pending_shows_the_admitted_message() -> None:
    wl = workload(
        cond("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue cq"),
        cond("Admitted", "False", "UnsatisfiedChecks", "The workload has unsatisfied checks"),
    )
    assert queueing.observe_queued(job(), wl, None).message.endswith(
        "The workload has unsatisfied checks"
    )


def test_a_preempted_run_is_queued_again_and_keeps_its_retries() -> None:
    wl = workload(
        PENDING,
        cond("Evicted", "True", "Preempted", "Preempted to accommodate a higher priority Workload"),
    )
    pods = [
        {
            "metadata": {"name": "mr-1-train-abc", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {},
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {"name": "train", "state": {"terminated": {"exitCode": 143}}}
                ],
            },
        }
    ]
    obs = queueing.observe_queued(job(failed=1), wl, None, pods)
    assert (obs.phase, obs.reason) == (Phase.PENDING, r.QUEUED)
    assert "evicted by Kueue (Preempted: Preempted to accommodate" in obs.message
    assert WAITING in obs.message
    # The Job's own failure count (1, from before), not the pod the preemption stopped.
    assert obs.attempts == 1
    assert obs.furthest_stage == "train"  # Labelbox's timeline does not go back
    assert progress.statuses_for(obs) == [
        LabelboxStatus.EXPORTING_DATA,
        LabelboxStatus.PREPARING_DATA,
        LabelboxStatus.TRAINING_MODEL,
    ]


def test_labelbox_sees_a_queued_run_at_its_first_status_with_why() -> None:
    obs = queueing.observe_queued(job(), workload(PENDING), None)
    assert progress.statuses_for(obs) == [LabelboxStatus.EXPORTING_DATA]
    assert progress.notice(obs) == obs.message
    meta = progress.metadata({"jobName": "mr-1-train"}, obs)
    assert (meta["reason"], meta["message"]) == ("Queued", obs.message)
