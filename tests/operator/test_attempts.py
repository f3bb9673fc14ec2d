"""Gang retry of a run of several pods, and what its status shows: pure, on Job and pod shapes.

A run of M pods is one Indexed Job per attempt (backoffLimit 0); the operator decides, from
what the status stores and what the current attempt's Job and pods show, whether the run goes
on, gets its next attempt (a failure spends the run's backoffLimit, a disruption does not), or
failed. The status lists every pod of the current attempt.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from lbtrain.resources.models import LabelboxStatus, Phase
from lbtrain.resources.status import ModelRunStatus
from lbtrain_dev.testbed import fake_kubelet as fk
from lbtrain_operator import attempts, jobspec, runstatus, scale, workers
from lbtrain_operator import reasons as r
from lbtrain_operator.attempts import Fail, Retry, Stored
from lbtrain_operator.podstate import Limits, Observation
from lbtrain_operator.settings import Settings
from lbtrain_operator.workers import Ended

from .builders import IMAGE, done, pod, run, running, template

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
LIMITS = Limits(backoff_limit=0, active_deadline_s=600)
JOB = "mr-1-train"


def gang_job(
    name: str = JOB, *conditions: tuple[str, str], budget: int = 2, pods: int = 2
) -> dict[str, Any]:
    """An attempt's Job as the informer keeps it: spec without the pod template."""
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "annotations": {scale.ANNOTATION_RETRY_BUDGET: str(budget)},
        },
        "spec": {"completionMode": "Indexed", "completions": pods, "backoffLimit": 0},
        "status": {
            "conditions": [
                {"type": t, "status": "True", "reason": why, "message": f"{t} {why}"}
                for t, why in conditions
            ]
        },
    }


def rank(job: dict[str, Any], index: int, **kwargs: Any) -> dict[str, Any]:
    """Pod `index` of `job`, on node `node-<index>`."""
    name = job["metadata"]["name"]
    body = pod(f"{name}-{index}-x", **{"node": f"node-{index}", **kwargs})
    body["metadata"] |= {
        "annotations": {workers.INDEX_ANNOTATION: str(index)},
        "ownerReferences": [{"kind": "Job", "name": name, "uid": job["metadata"]["uid"]}],
    }
    return body


def training(job: dict[str, Any], index: int) -> dict[str, Any]:
    stages = {"export": done("export"), "prepare": done("prepare"), "train": running("train")}
    return rank(job, index, phase="Running", **stages)


def killed(job: dict[str, Any], index: int, when: str = "2026-01-01T00:10:00Z") -> dict[str, Any]:
    train = fk.terminated("train", IMAGE, 137)
    train["state"]["terminated"]["finishedAt"] = when
    return rank(job, index, phase="Failed", export=done("export"), prepare=done("prepare"),
                train=train)  # fmt: skip


def evicted(job: dict[str, Any], index: int) -> dict[str, Any]:
    cond = fk.condition("DisruptionTarget", "True", "EvictionByEvictionAPI", "Eviction API")
    return rank(job, index, phase="Failed", conditions=[cond], reason="Evicted")


FIRST = Stored()


def observe(
    job: dict[str, Any], pods: list[dict[str, Any]], now: Stored = FIRST
) -> tuple[Observation, str | None]:
    return attempts.observe(job, pods, now, T0, LIMITS)


# --- names ------------------------------------------------------------------------------------


def test_the_first_attempt_keeps_the_job_name_and_later_ones_say_their_number() -> None:
    assert attempts.job_name(JOB, 1) == JOB
    assert attempts.job_name(JOB, 3) == f"{JOB}-a3"
    assert attempts.first_job_name(f"{JOB}-a3", 3) == JOB
    assert attempts.first_job_name(JOB, 1) == JOB
    longest = attempts.job_name(jobspec.job_name("x" * 253), 99)
    # The Service name and every pod hostname stay DNS labels (63 characters).
    assert len(scale.service_name(longest)) <= 63 and len(f"{longest}-15") <= 63


def test_the_next_attempt_s_job_has_its_own_rendezvous() -> None:
    t = template(gpus=0, numNodes=2, artifacts={"destination": "s3://b/{modelRunId}"})
    first = jobspec.build_job(run(), "u", t, Settings())
    assert first["metadata"]["annotations"][scale.ANNOTATION_RETRY_BUDGET] == "2"
    assert attempts.budget_of(first) == 2
    second = attempts.renamed(first, f"{JOB}-a2")
    pod_spec = second["spec"]["template"]["spec"]
    assert second["metadata"]["name"] == f"{JOB}-a2"
    assert pod_spec["subdomain"] == f"rdzv-{JOB}-a2"
    env = {e["name"]: e.get("value") for e in pod_spec["containers"][0]["env"]}
    assert env["PET_MASTER_ADDR"] == f"{JOB}-a2-0.rdzv-{JOB}-a2"
    assert first["metadata"]["name"] == JOB  # the first attempt's Job is left as it was
    service = scale.build_service(second, "mr-1", "u")
    assert service["spec"]["selector"] == {scale.JOB_NAME_LABEL: f"{JOB}-a2"}


# --- the decision -----------------------------------------------------------------------------


def test_a_failure_spends_the_budget_and_the_last_one_fails_the_run() -> None:
    end = Ended(r.JOB_FAILED, "pod p (index 1) on node n failed: train exited", False, False)
    first = attempts.decide(Stored(1, 0), end, budget=2)
    assert first == Retry(2, 1, r.RETRYING, first.message)
    assert "attempt 2 resumes from the last checkpoint" in first.message
    assert isinstance(attempts.decide(Stored(2, 1), end, 2), Retry)
    last = attempts.decide(Stored(3, 2), end, budget=2)
    assert isinstance(last, Fail) and last.reason == r.BACKOFF_LIMIT_EXCEEDED
    assert "index 1" in last.message and "backoffLimit 2" in last.message


def test_a_disruption_retries_without_spending_the_budget() -> None:
    end = Ended("evicted", "pod p (index 0) on node n failed: Eviction API", True, False)
    decision = attempts.decide(Stored(4, 0), end, budget=0)
    assert decision == Retry(5, 0, r.DISRUPTED, decision.message)


def test_bad_input_fails_at_once_and_oom_keeps_its_reason() -> None:
    bad = Ended(r.BAD_INPUT, "no labels", False, True)
    assert attempts.decide(Stored(1, 0), bad, budget=5) == Fail(1, r.BAD_INPUT, "no labels")
    oom = Ended(r.OOM_KILLED, "out of memory", False, False)
    assert isinstance(attempts.decide(Stored(1, 0), oom, budget=1), Retry)
    final = attempts.decide(Stored(2, 1), oom, budget=1)
    assert isinstance(final, Fail) and final.reason == r.OOM_KILLED


# --- observing an attempt ---------------------------------------------------------------------


def test_the_run_is_at_the_stage_every_pod_reached_with_a_row_per_pod() -> None:
    job = gang_job()
    behind = rank(job, 1, export=done("export"), prepare=running("prepare"))
    obs, following = observe(job, [training(job, 0), behind])
    assert following is None
    assert (obs.phase, obs.furthest_stage, obs.workers_up) == (Phase.PREPARING, "prepare", "2/2")
    assert [(w.index, w.node, w.stage, w.state) for w in obs.workers or ()] == [
        (0, "node-0", "train", "Running"),
        (1, "node-1", "prepare", "Pending"),
    ]
    obs, _ = observe(job, [training(job, 0), training(job, 1)])
    assert (obs.phase, obs.reason, obs.furthest_stage) == (Phase.TRAINING, r.STAGE_RUNNING, "train")
    assert obs.message == f"train is running in 2/2 pods of Job {JOB}"
    assert (obs.attempt, obs.failed_attempts) == (1, 0)


def test_a_pod_waiting_holds_the_run_and_says_why() -> None:
    job = gang_job()
    msg = "0/1 nodes are available: 1 Insufficient cpu."
    stuck = rank(job, 1, node=None, conditions=[
        fk.condition("PodScheduled", "False", "Unschedulable", msg)])  # fmt: skip
    obs, _ = observe(job, [training(job, 0), stuck])
    assert (obs.phase, obs.reason, obs.workers_up) == (Phase.PENDING, r.UNSCHEDULABLE, "1/2")
    assert msg in obs.message
    assert obs.workers is not None and obs.workers[1].reason == "Unschedulable"


def test_a_failed_attempt_is_retried_as_a_whole_once_no_rank_runs() -> None:
    job = gang_job(JOB, ("FailureTarget", "BackoffLimitExceeded"))
    # The Job controller decided; rank 0 is still being stopped: not yet a new attempt.
    obs, following = observe(job, [training(job, 0), killed(job, 1)])
    assert following is None and obs.phase is Phase.TRAINING
    job = gang_job(JOB, ("Failed", "BackoffLimitExceeded"))
    stopped = killed(job, 0, when="2026-01-01T00:10:05Z")  # stopped by the Job controller
    obs, following = observe(job, [stopped, killed(job, 1)])
    assert following == f"{JOB}-a2"
    assert (obs.phase, obs.reason) == (Phase.PENDING, r.RETRYING)
    assert (obs.attempt, obs.failed_attempts, obs.workers_up) == (2, 1, "0/2")
    # The pod that failed first is named, with its index and node, not the one stopped after.
    assert "(index 1) on node node-1" in obs.message and "code 137" in obs.message
    # An operator that restarts before storing this decides the same again.
    assert observe(job, [stopped, killed(job, 1)]) == (obs, following)


def test_the_last_attempt_failing_fails_the_run() -> None:
    job = gang_job(f"{JOB}-a3", ("Failed", "BackoffLimitExceeded"), budget=2)
    obs, following = observe(job, [killed(job, 0)], Stored(3, 2))
    assert following is None
    assert (obs.phase, obs.reason, obs.failed_attempts) == (
        Phase.FAILED,
        r.BACKOFF_LIMIT_EXCEEDED,
        3,
    )
    assert "attempt 3 failed" in obs.message and "(index 0) on node node-0" in obs.message


def test_the_next_attempt_says_why_it_exists_until_its_pods_start() -> None:
    job = gang_job(f"{JOB}-a2")
    why = Stored(2, 1, r.RETRYING, "attempt 1 failed: ...")
    obs, _ = observe(job, [], why)
    assert (obs.phase, obs.reason, obs.message) == (Phase.PENDING, r.RETRYING, why.message)
    one = [rank(job, 0, export=running("export")), rank(job, 1)]
    assert observe(job, one, why)[0].reason == r.RETRYING  # rank 1's containers are starting
    both = [rank(job, i, export=running("export")) for i in (0, 1)]
    assert observe(job, both, why)[0].reason == r.STAGE_RUNNING


def test_an_eviction_gets_the_next_attempt_without_spending_the_budget() -> None:
    job = gang_job(f"{JOB}-a2", ("Failed", "PodFailurePolicy"), budget=0)
    obs, following = observe(job, [evicted(job, 1), killed(job, 0)], Stored(2, 0))
    assert following == f"{JOB}-a3"
    assert (obs.reason, obs.attempt, obs.failed_attempts) == (r.DISRUPTED, 3, 0)


def test_a_finished_attempt_reports_rank_0_s_summary() -> None:
    job = gang_job(JOB, ("Complete", "CompletionsReached"))
    summary = '{"metrics": {"accuracy": 1.0}}'
    ok = [
        rank(job, i, phase="Succeeded", export=done("export"), prepare=done("prepare"),
             train=fk.terminated("train", IMAGE, 0, message=summary if i == 0 else ""))
        for i in (1, 0)
    ]  # fmt: skip
    obs, _ = observe(job, ok)
    assert (obs.phase, obs.summary, obs.pod_name) == (
        Phase.SUCCEEDED,
        {"metrics": {"accuracy": 1.0}},
        f"{JOB}-0-x",
    )


def test_only_the_current_attempt_s_pods_count() -> None:
    old, new = gang_job(JOB), gang_job(f"{JOB}-a2")
    pods = [killed(old, 0), killed(old, 1), training(new, 0)]
    assert [p["metadata"]["name"] for p in workers.of_job(pods, new)] == [f"{JOB}-a2-0-x"]


def test_rows_are_bounded_and_the_rest_counted() -> None:
    job = gang_job(pods=20)
    rows = workers.workers(job, [training(job, i) for i in range(20)])
    assert (len(rows.rows), rows.omitted, rows.up) == (workers.MAX_ROWS, 4, "20/20")


# --- the status and Labelbox ------------------------------------------------------------------


def test_labelbox_sees_one_timeline_and_the_attempt_in_the_metadata() -> None:
    job1, job2 = gang_job(JOB), gang_job(f"{JOB}-a2")
    status = ModelRunStatus(job_name=JOB)
    seen: list[tuple[LabelboxStatus | None, Any, Any]] = []
    steps = [
        observe(job1, [training(job1, 0), training(job1, 1)])[0],
        observe(gang_job(JOB, ("Failed", "BackoffLimitExceeded")), [killed(job1, 1)])[0],
        observe(job2, [rank(job2, 0, export=running("export"))], Stored(2, 1))[0],
        observe(job2, [training(job2, 0), training(job2, 1)], Stored(2, 1))[0],
        observe(gang_job(f"{JOB}-a2", ("Complete", "CompletionsReached")), [], Stored(2, 1))[0],
    ]
    queued: list[LabelboxStatus] = []
    for obs in steps:
        status = runstatus.fold(status, obs, T0, 1)
        box = status.labelbox
        queued += [s for s in box.pending if s not in queued]
        seen.append((box.desired, box.metadata["attempt"], box.metadata["phase"]))
    assert queued == [
        LabelboxStatus.EXPORTING_DATA,
        LabelboxStatus.PREPARING_DATA,
        LabelboxStatus.TRAINING_MODEL,
        LabelboxStatus.COMPLETE,
    ]
    assert [a for _, a, _ in seen] == [1, 2, 2, 2, 2]  # never back to an earlier attempt
    assert status.attempt == 2 and status.failed_attempts == 1
    assert status.workers_up == "0/2"
