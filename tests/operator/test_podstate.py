"""Phase and reason from Job and pod state: the failure taxonomy, case by case."""

from __future__ import annotations

import datetime as dt

from lbtrain import contract
from lbtrain.resources.models import Phase
from lbtrain_dev.testbed import fake_kubelet as fk
from lbtrain_operator import podstate, progress
from lbtrain_operator import reasons as r
from lbtrain_operator.podstate import Limits, observe

from .builders import IMAGE, done, job, pod, running

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
LIMITS = Limits(image_pull_grace_s=300, backoff_limit=2, active_deadline_s=600)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_no_pod_yet_is_pending() -> None:
    obs = observe(job(), [], at(1), LIMITS)
    assert (obs.phase, obs.reason) == (Phase.PENDING, r.WAITING_FOR_POD)


def test_unschedulable_keeps_scheduler_message() -> None:
    msg = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    p = pod(node=None, conditions=[fk.condition("PodScheduled", "False", "Unschedulable", msg)])
    obs = observe(job(), [p], at(5), LIMITS)
    assert (obs.phase, obs.reason) == (Phase.PENDING, r.UNSCHEDULABLE)
    assert msg in obs.message


def test_each_stage_maps_to_its_phase() -> None:
    assert observe(job(), [pod(export=running("export"))], at(1), LIMITS).phase is Phase.EXPORTING
    prep = pod(export=done("export"), prepare=running("prepare"))
    assert observe(job(), [prep], at(1), LIMITS).phase is Phase.PREPARING
    train = pod(
        phase="Running", export=done("export"), prepare=done("prepare"), train=running("train")
    )
    obs = observe(job(), [train], at(1), LIMITS)
    assert (obs.phase, obs.reason, obs.furthest_stage) == (Phase.TRAINING, r.STAGE_RUNNING, "train")
    assert obs.node_name == "gpu-node-1"


def test_image_pull_backoff_waits_then_fails_after_grace() -> None:
    waiting = fk.waiting("export", IMAGE, "ImagePullBackOff", 'Back-off pulling image "x"')
    p = pod(export=waiting)
    early = observe(job(), [p], at(60), LIMITS)
    assert (early.phase, early.reason) == (Phase.PENDING, r.IMAGE_PULL_BACKOFF)
    late = observe(job(), [p], at(301), LIMITS)
    assert (late.phase, late.reason) == (Phase.FAILED, r.IMAGE_PULL_FAILED)
    assert IMAGE in late.message and "Back-off" in late.message


def test_invalid_image_name_fails_at_once() -> None:
    p = pod(export=fk.waiting("export", "UPPER:bad", "InvalidImageName", "bad name"))
    assert observe(job(), [p], at(1), LIMITS).reason == r.IMAGE_PULL_FAILED


def test_crash_loop_backoff_reports_then_fails_past_the_retry_limit() -> None:
    crash = fk.waiting(
        "train", IMAGE, "CrashLoopBackOff", "back-off 40s restarting failed container"
    )
    p = pod(export=done("export"), prepare=done("prepare"), train={**crash, "restartCount": 1})
    obs = observe(job(), [p], at(1), LIMITS)
    assert (obs.phase, obs.reason) == (Phase.TRAINING, r.CRASH_LOOP_BACKOFF)
    p = pod(export=done("export"), prepare=done("prepare"), train={**crash, "restartCount": 3})
    assert observe(job(), [p], at(1), LIMITS).phase is Phase.FAILED


def test_oom_killed_is_named_when_the_job_fails() -> None:
    oom = fk.terminated("train", IMAGE, 137, "OOMKilled")
    p = pod(phase="Failed", export=done("export"), prepare=done("prepare"), train=oom)
    obs = observe(job(("Failed", "BackoffLimitExceeded")), [p], at(1), LIMITS)
    assert (obs.phase, obs.reason) == (Phase.FAILED, r.OOM_KILLED)
    assert "memory" in obs.message


def test_bad_input_carries_the_trainer_message() -> None:
    bad = fk.terminated(
        "prepare", IMAGE, 65, message='{"error": "class cat has 1 example (rows: r1)"}'
    )
    p = pod(phase="Failed", export=done("export"), prepare=bad)
    obs = observe(job(("Failed", "PodFailurePolicy")), [p], at(1), LIMITS)
    assert (obs.phase, obs.reason) == (Phase.FAILED, r.BAD_INPUT)
    assert "class cat has 1 example (rows: r1)" in obs.message
    assert obs.furthest_stage == "prepare"


def test_evicted_pod_is_retried_not_failed() -> None:
    evicted = pod(
        "p1",
        phase="Failed",
        created="2026-01-01T00:00:00Z",
        conditions=[fk.condition("DisruptionTarget", "True", "EvictionByEvictionAPI", "evicted")],
    )
    obs = observe(job(), [evicted], at(1), LIMITS)
    assert (obs.phase, obs.reason, obs.attempts) == (Phase.PENDING, r.DISRUPTED, 0)
    preempted = pod(
        "p1",
        phase="Failed",
        conditions=[
            fk.condition("DisruptionTarget", "True", "PreemptionByScheduler", "preempted by high")
        ],
    )
    assert "preempted" in observe(job(), [preempted], at(1), LIMITS).message
    waiting = pod("p2", created="2026-01-01T00:01:00Z", node=None, start=None)
    obs = observe(job(), [evicted, waiting], at(61), LIMITS)
    assert (obs.reason, obs.pod_name) == (r.DISRUPTED, "p2")  # the replacement says why it exists
    newer = pod("p2", created="2026-01-01T00:01:00Z", export=running("export"))
    obs = observe(job(), [evicted, newer], at(70), LIMITS)
    assert (obs.phase, obs.pod_name) == (Phase.EXPORTING, "p2")


def test_failed_attempt_is_retrying_until_the_job_gives_up() -> None:
    crashed = fk.terminated("train", IMAGE, 1, message="CUDA error")
    p = pod(phase="Failed", export=done("export"), prepare=done("prepare"), train=crashed)
    obs = observe(job(), [p], at(1), LIMITS)
    assert (obs.phase, obs.reason, obs.attempts) == (Phase.PENDING, r.RETRYING, 1)
    final = observe(job(("Failed", "BackoffLimitExceeded")), [p], at(2), LIMITS)
    assert (final.phase, final.reason) == (Phase.FAILED, r.BACKOFF_LIMIT_EXCEEDED)
    assert "CUDA error" in final.message


def test_last_allowed_attempt_failed_is_not_retrying_nor_a_labelbox_notice() -> None:
    oom = fk.terminated("train", IMAGE, 137, reason="OOMKilled")
    p = pod(phase="Failed", export=done("export"), prepare=done("prepare"), train=oom)
    no_retries = Limits(image_pull_grace_s=300, backoff_limit=0, active_deadline_s=600)
    obs = observe(job(), [p], at(1), no_retries)  # the Job controller has not failed it yet
    assert (obs.phase, obs.reason, obs.attempts) == (Phase.TRAINING, r.FAILING, 1)
    assert "no retries are left (backoffLimit 0)" in obs.message
    assert progress.notice(obs) is None  # nothing to tell Labelbox until the Job fails
    final = observe(job(("Failed", "BackoffLimitExceeded")), [p], at(2), no_retries)
    assert (final.phase, final.reason) == (Phase.FAILED, r.OOM_KILLED)


def test_deadline_exceeded() -> None:
    obs = observe(job(("Failed", "DeadlineExceeded")), [pod(phase="Failed")], at(700), LIMITS)
    assert (obs.phase, obs.reason) == (Phase.FAILED, r.DEADLINE_EXCEEDED)
    assert "600" in obs.message


def test_success_parses_the_termination_summary() -> None:
    summary = '{"accuracy": 0.93, "artifacts": "s3://bucket/run"}'
    p = pod(
        phase="Succeeded",
        export=done("export"),
        prepare=done("prepare"),
        train=fk.terminated("train", IMAGE, 0, message=summary),
    )
    obs = observe(job(("Complete", "")), [p], at(1), LIMITS)
    assert obs.phase is Phase.SUCCEEDED
    assert obs.summary == {"accuracy": 0.93, "artifacts": "s3://bucket/run"}


def test_plain_text_summary_is_kept_as_message() -> None:
    p = pod(phase="Succeeded", train=fk.terminated("train", IMAGE, 0, message="done, no json"))
    assert observe(job(("Complete", "")), [p], at(1), LIMITS).summary == {
        "message": "done, no json"
    }


def test_finished_pod_before_job_completion_is_not_waiting() -> None:
    p = pod(phase="Succeeded", export=done("export"), prepare=done("prepare"), train=done("train"))
    obs = observe(job(), [p], at(1), LIMITS)
    assert (obs.phase, obs.reason) == (Phase.TRAINING, r.COMPLETING)


def test_bad_input_is_final_before_the_job_says_so() -> None:
    bad = fk.terminated("prepare", IMAGE, 65, message='{"error": "no labels"}')
    p = pod(phase="Failed", export=done("export"), prepare=bad)
    obs = observe(job(), [p], at(1), LIMITS)  # the Job has not applied its podFailurePolicy yet
    assert (obs.phase, obs.reason) == (Phase.FAILED, r.BAD_INPUT)


def test_an_escaping_artifact_destination_is_final_with_its_own_reason() -> None:
    message = "{\"error\": \"artifact destination '/a/../b' is refused: it contains '..'\"}"
    refused = fk.terminated("export", IMAGE, contract.EXIT_DESTINATION_ESCAPES, message=message)
    p = pod(phase="Failed", export=refused)
    obs = observe(job(), [p], at(1), LIMITS)  # before the Job applies its podFailurePolicy
    assert (obs.phase, obs.reason) == (Phase.FAILED, r.ARTIFACT_DESTINATION_ESCAPES)
    assert obs.message.startswith("artifact destination '/a/../b' is refused")
    failed_job = observe(job(("Failed", "PodFailurePolicy")), [p], at(2), LIMITS)
    assert (failed_job.reason, failed_job.message) == (obs.reason, obs.message)


def test_an_unusable_artifact_destination_is_final_with_its_own_reason() -> None:
    message = (
        '{"error": "artifact destination s3://runs/mr1 is unusable: the bucket does not exist"}'
    )
    refused = fk.terminated("export", IMAGE, contract.EXIT_DESTINATION_UNUSABLE, message=message)
    p = pod(phase="Failed", export=refused)
    obs = observe(job(), [p], at(1), LIMITS)  # before the Job applies its podFailurePolicy
    assert (obs.phase, obs.reason) == (Phase.FAILED, r.ARTIFACT_DESTINATION_UNUSABLE)
    assert obs.message.startswith("artifact destination s3://runs/mr1 is unusable")
    assert "credentials in its env/envFrom" in obs.message


# --- volumes ----------------------------------------------------------------------------------
VOLUME_LIMITS = Limits(volume_grace_s=600)
MULTI_ATTACH = (
    'Multi-Attach error for volume "pvc-1" Volume is already used by pod(s) mr-0-train-xyz'
)


def volume_event(reason: str, message: str, when: str) -> dict[str, object]:
    return {"reason": reason, "message": message, "lastTimestamp": when, "type": "Warning"}


def test_a_pod_that_starts_quickly_reads_no_events() -> None:
    p = pod()
    obs = observe(job(), [p], at(2), VOLUME_LIMITS)
    assert obs.reason == r.CONTAINER_CREATING
    assert not podstate.volume_events_due(obs, [p], at(2))
    assert podstate.volume_events_due(obs, [p], at(6))


def test_volume_events_make_the_wait_visible_then_fail_the_run_past_the_grace() -> None:
    p = pod()
    events = [
        volume_event("Pulling", "Pulling image", "2026-01-01T00:00:01Z"),
        volume_event("FailedAttachVolume", MULTI_ATTACH, "2026-01-01T00:00:09Z"),
        volume_event("FailedMount", "timed out waiting for the condition", "2026-01-01T00:00:03Z"),
    ]
    messages = podstate.volume_event_messages(events)
    assert messages == ["timed out waiting for the condition", MULTI_ATTACH], "oldest first"
    waiting = observe(job(), [p], at(30), VOLUME_LIMITS)
    obs = podstate.volume_wait(waiting, messages, [p], at(30), VOLUME_LIMITS)
    assert (obs.phase, obs.reason) == (Phase.PENDING, r.VOLUME_PENDING)
    assert MULTI_ATTACH in obs.message and p["metadata"]["name"] in obs.message
    late = podstate.volume_wait(waiting, messages, [p], at(600), VOLUME_LIMITS)
    assert (late.phase, late.reason) == (Phase.FAILED, r.VOLUME_FAILED)
    assert MULTI_ATTACH in late.message and "within 600s" in late.message
    # No volume Event: the pod is just starting (pulling its image, say).
    assert podstate.volume_wait(waiting, [], [p], at(900), VOLUME_LIMITS) == waiting


def test_a_volume_failure_the_kubelet_got_past_is_over() -> None:
    events = [
        volume_event("FailedMount", "secret not registered", "2026-01-01T00:00:02Z"),
        volume_event("Pulling", "Pulling image trainer", "2026-01-01T00:00:04Z"),
    ]
    assert podstate.volume_event_messages(events) == [], "a large image may pull for minutes"


def test_an_unbound_claim_is_a_volume_wait_with_the_scheduler_s_words() -> None:
    msg = "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."
    p = pod(node=None, conditions=[fk.condition("PodScheduled", "False", "Unschedulable", msg)])
    obs = observe(job(), [p], at(5), VOLUME_LIMITS)
    assert (obs.phase, obs.reason) == (Phase.PENDING, r.VOLUME_PENDING) and msg in obs.message
    obs = observe(job(), [p], at(601), VOLUME_LIMITS)
    assert (obs.phase, obs.reason) == (Phase.FAILED, r.VOLUME_FAILED) and msg in obs.message


def test_the_volume_grace_comes_from_the_job() -> None:
    j = job()
    j["metadata"]["annotations"]["lbtrain.io/volume-grace-seconds"] = "45"
    assert podstate.limits_of(j).volume_grace_s == 45
    assert podstate.limits_of(job()).volume_grace_s == 600, "a Job built before the field"
