"""What a run is doing, read from its Job and pods: a pure function, unit-tested on pod shapes.

The pod's own status is the source of truth: which stage container runs, why a pod waits
(Unschedulable, image pull errors), and why it ended (OOMKilled, the trainer's bad-input exit
code, eviction or preemption). A pod waiting for its volumes says so only in Events (the
kubelet's FailedMount, FailedAttachVolume) or in the scheduler's unbound-claim message; the
pass reads those Events for a pod that is slow to start, and `volume_wait` folds them in.
The Job's conditions say whether the run as a whole finished.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lbtrain import contract
from lbtrain.resources.models import (
    DEFAULT_ACTIVE_DEADLINE_SECONDS,
    DEFAULT_BACKOFF_LIMIT,
    DEFAULT_IMAGE_PULL_GRACE_SECONDS,
    DEFAULT_VOLUME_GRACE_SECONDS,
    Phase,
)
from lbtrain.resources.names import ANNOTATION_IMAGE_PULL_GRACE, ANNOTATION_VOLUME_GRACE
from lbtrain.resources.status import WorkerRow
from lbtrain.timestamps import parse_optional
from lbtrain_operator import reasons as r

STAGE_PHASE = {
    contract.STAGE_EXPORT: Phase.EXPORTING,
    contract.STAGE_PREPARE: Phase.PREPARING,
    contract.STAGE_TRAIN: Phase.TRAINING,
}
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"})
FATAL_WAITING_REASONS = frozenset({"InvalidImageName"})
CONFIG_ERROR_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
SUMMARY_MAX_CHARS = contract.TERMINATION_MESSAGE_MAX_BYTES
PERMANENT_REASONS = frozenset(reason for reason, _ in r.PERMANENT_EXITS.values())
# The kubelet's and attach/detach controller's Event reasons for a volume that will not come up
# (a pod's status only says ContainerCreating meanwhile), and the scheduler's words for a pod
# whose claim is not bound (or bound to a volume no node can reach).
VOLUME_EVENT_REASONS = frozenset({"FailedMount", "FailedAttachVolume"})
UNBOUND_CLAIM_WORDS = ("persistentvolumeclaim", "volume node affinity")
# The kubelet pulls images and starts containers only once every volume is mounted: one of these
# after a volume failure means that failure is over (the pod may pull a large image for minutes).
VOLUMES_READY_REASONS = frozenset({"Pulling", "Pulled", "Created", "Started"})
# A pod that starts within this many seconds has no volume trouble worth an Events list.
VOLUME_EVENTS_AFTER_S = 5.0


@dataclass(frozen=True)
class Limits:
    """The template's tolerances that the observation applies."""

    image_pull_grace_s: int = DEFAULT_IMAGE_PULL_GRACE_SECONDS
    volume_grace_s: int = DEFAULT_VOLUME_GRACE_SECONDS
    backoff_limit: int = DEFAULT_BACKOFF_LIMIT
    active_deadline_s: int = DEFAULT_ACTIVE_DEADLINE_SECONDS


def limits_of(job: dict[str, Any]) -> Limits:
    """The limits a Job was built with (`jobspec`), each falling back to the template's default
    when the Job lacks it."""
    spec = job.get("spec") or {}
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    grace = annotations.get(ANNOTATION_IMAGE_PULL_GRACE)
    volume = annotations.get(ANNOTATION_VOLUME_GRACE)
    defaults = Limits()
    return Limits(
        image_pull_grace_s=int(grace) if grace and grace.isdigit() else defaults.image_pull_grace_s,
        volume_grace_s=int(volume) if volume and volume.isdigit() else defaults.volume_grace_s,
        backoff_limit=int(spec.get("backoffLimit", defaults.backoff_limit)),
        active_deadline_s=int(spec.get("activeDeadlineSeconds") or defaults.active_deadline_s),
    )


@dataclass(frozen=True)
class Observation:
    phase: Phase
    reason: str
    message: str
    pod_name: str | None = None
    node_name: str | None = None
    furthest_stage: str | None = None  # the last stage any pod of the run got to run
    attempts: int = 0  # pods that failed (disruptions excluded)
    running_time: str | None = None  # when the first stage of the newest pod started
    summary: dict[str, Any] = field(default_factory=dict)
    # A run of several pods (`workers`, `attempts`); None for a run of one pod.
    attempt: int | None = None
    failed_attempts: int | None = None
    workers: tuple[WorkerRow, ...] | None = None
    workers_up: str | None = None
    workers_omitted: int | None = None

    @property
    def finished(self) -> bool:
        return self.phase.finished


# Read the same way by `workers`, for a run of several pods.
def container_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return _statuses(pod)


def conditions_of(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return _conditions(obj)


def true_condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return _true(obj, type_)


def started_at(pod: dict[str, Any]) -> str | None:
    return _started_at(pod)


@dataclass(frozen=True)
class PodFailure:
    """Why one pod ended in phase Failed."""

    reason: str
    message: str
    disrupted: bool = False
    container: str | None = None
    exit_code: int | None = None


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def _true(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    cond = _conditions(obj).get(type_)
    return cond if cond and cond.get("status") == "True" else None


def _statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Container statuses in stage order: init containers first, then the main ones."""
    status = pod.get("status") or {}
    return list(status.get("initContainerStatuses") or []) + list(
        status.get("containerStatuses") or []
    )


def parse_summary(message: str | None) -> dict[str, Any]:
    """The train container's termination message: JSON from the trainer, else plain text."""
    if not message:
        return {}
    try:
        doc = json.loads(message)
    except ValueError:
        return {"message": message[-SUMMARY_MAX_CHARS:]}
    return doc if isinstance(doc, dict) else {"message": str(doc)[:SUMMARY_MAX_CHARS]}


def pod_failure(pod: dict[str, Any]) -> PodFailure:
    """Classify a Failed pod: disruption, OOM, bad input, or a plain non-zero exit."""
    status = pod.get("status") or {}
    disruption = _true(pod, "DisruptionTarget")
    if disruption or status.get("reason") in ("Evicted", "Preempting"):
        cause = (disruption or {}).get("reason") or status.get("reason") or "Evicted"
        how = "preempted" if "Preempt" in cause else "evicted"
        detail = (disruption or {}).get("message") or status.get("message") or cause
        return PodFailure(how, detail, disrupted=True)
    for cs in _statuses(pod):
        term = (cs.get("state") or {}).get("terminated") or {}
        code = term.get("exitCode")
        if not term or code == 0:
            continue
        name, text = cs["name"], (term.get("message") or "").strip()
        if term.get("reason") == "OOMKilled":
            return PodFailure(
                r.OOM_KILLED,
                r.MSG_OOM_KILLED.format(container=name, exit_code=code),
                container=name,
                exit_code=code,
            )
        if code in r.PERMANENT_EXITS:
            reason, message = r.PERMANENT_EXITS[code]
            summary = parse_summary(text)
            detail = summary.get("error") or summary.get("message") or text or "see pod logs"
            return PodFailure(reason, message.format(detail=detail), container=name, exit_code=code)
        detail = f"{name} exited with code {code}" + (f": {text[-400:]}" if text else "")
        return PodFailure(r.JOB_FAILED, detail, container=name, exit_code=code)
    return PodFailure(r.JOB_FAILED, status.get("message") or "the pod failed")


def furthest_stage(pods: Sequence[dict[str, Any]]) -> str | None:
    """The last stage that started in any pod (a stage counts once its container ran)."""
    reached = -1
    for pod in pods:
        for cs in _statuses(pod):
            state = cs.get("state") or {}
            if cs["name"] in contract.STAGES and ("running" in state or "terminated" in state):
                reached = max(reached, contract.STAGES.index(cs["name"]))
    return contract.STAGES[reached] if reached >= 0 else None


def _active(pod: dict[str, Any]) -> bool:
    phase = (pod.get("status") or {}).get("phase", "Pending")
    return phase in ("Pending", "Running", "Unknown") and not pod["metadata"].get(
        "deletionTimestamp"
    )


def _started_at(pod: dict[str, Any]) -> str | None:
    for cs in _statuses(pod):
        state = cs.get("state") or {}
        started = (state.get("running") or state.get("terminated") or {}).get("startedAt")
        if started:
            return str(started)
    return None


def waited_s(pod: dict[str, Any], now: dt.datetime) -> float:
    """Seconds since the kubelet took the pod (since it was created, before it is scheduled)."""
    status, meta = pod.get("status") or {}, pod["metadata"]
    started = parse_optional(status.get("startTime")) or parse_optional(
        meta.get("creationTimestamp")
    )
    return (now - started).total_seconds() if started else 0.0


def _volume_verdict(pod: str, detail: str, waited: float, limits: Limits) -> dict[str, Any]:
    """VolumePending while the template's volume grace lasts, VolumeFailed after it."""
    if waited >= limits.volume_grace_s:
        message = r.MSG_VOLUME_FAILED.format(pod=pod, seconds=int(waited), detail=detail)
        return {"phase": Phase.FAILED, "reason": r.VOLUME_FAILED, "message": message}
    message = r.MSG_VOLUME_PENDING.format(pod=pod, detail=detail)
    return {"phase": Phase.PENDING, "reason": r.VOLUME_PENDING, "message": message}


def volume_event_messages(events: Sequence[dict[str, Any]]) -> list[str]:
    """The messages of a pod's volume failure Events (`VOLUME_EVENT_REASONS`) that still hold,
    oldest first: none once the kubelet went on to pull or start a container."""

    def when(event: dict[str, Any]) -> str:
        return str(
            event.get("lastTimestamp")
            or event.get("eventTime")
            or event.get("firstTimestamp")
            or (event.get("metadata") or {}).get("creationTimestamp")
            or ""
        )

    messages: list[str] = []
    for event in sorted(events, key=when):
        reason = event.get("reason")
        if reason in VOLUMES_READY_REASONS:
            messages = []
        elif reason in VOLUME_EVENT_REASONS:
            messages.append(str(event.get("message") or reason))
    return messages


def _pod_named(pods: Sequence[dict[str, Any]], name: str | None) -> dict[str, Any] | None:
    return next((p for p in pods if p["metadata"]["name"] == name), None)


def volume_events_due(obs: Observation, pods: Sequence[dict[str, Any]], now: dt.datetime) -> bool:
    """Whether the pod's Events should be read: it is scheduled, its containers have not
    started, and it has waited long enough for a volume to be the likely cause."""
    if obs.reason != r.CONTAINER_CREATING:
        return False
    pod = _pod_named(pods, obs.pod_name)
    return pod is not None and waited_s(pod, now) >= VOLUME_EVENTS_AFTER_S


def volume_wait(
    obs: Observation,
    messages: Sequence[str],
    pods: Sequence[dict[str, Any]],
    now: dt.datetime,
    limits: Limits,
) -> Observation:
    """A starting pod's observation with its volume Events folded in: VolumePending with the
    newest message, VolumeFailed once the pod has waited past the template's volume grace."""
    pod = _pod_named(pods, obs.pod_name)
    if not messages or pod is None or obs.reason != r.CONTAINER_CREATING:
        return obs
    verdict = _volume_verdict(pod["metadata"]["name"], messages[-1], waited_s(pod, now), limits)
    return replace(obs, **verdict)


def observe_active_pod(pod: dict[str, Any], now: dt.datetime, limits: Limits) -> Observation:
    """A pod that has not ended: which stage runs, or why it waits."""
    name, node = pod["metadata"]["name"], pod["spec"].get("nodeName")
    here = Observation(
        Phase.PENDING, "", "", pod_name=name, node_name=node, running_time=_started_at(pod)
    )

    def at(phase: Phase, reason: str, message: str) -> Observation:
        return replace(here, phase=phase, reason=reason, message=message)

    waited = waited_s(pod, now)
    scheduled = _conditions(pod).get("PodScheduled") or {}
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        detail = scheduled.get("message") or "no node fits the pod"
        if any(word in detail.lower() for word in UNBOUND_CLAIM_WORDS):
            return replace(here, **_volume_verdict(name, detail, waited, limits))
        return at(
            Phase.PENDING, r.UNSCHEDULABLE, r.MSG_UNSCHEDULABLE.format(pod=name, detail=detail)
        )
    for cs in _statuses(pod):
        state, cname = cs.get("state") or {}, cs["name"]
        if (state.get("terminated") or {}).get("exitCode") == 0 and cname != contract.STAGE_TRAIN:
            continue  # a finished stage; look at the next one
        stage_phase = STAGE_PHASE.get(cname, Phase.TRAINING)
        if "running" in state:
            msg = r.MSG_STAGE_RUNNING.format(stage=cname, pod=name, node=node or "?")
            return at(stage_phase, r.STAGE_RUNNING, msg)
        waiting = state.get("waiting") or {}
        why = waiting.get("reason", "")
        detail = waiting.get("message") or why
        image = cs.get("image") or ""
        pull_expired = why in IMAGE_PULL_REASONS and waited >= limits.image_pull_grace_s
        if why in FATAL_WAITING_REASONS or pull_expired:
            msg = r.MSG_IMAGE_PULL_FAILED.format(
                image=image, container=cname, seconds=int(waited), detail=detail
            )
            return at(Phase.FAILED, r.IMAGE_PULL_FAILED, msg)
        if why in IMAGE_PULL_REASONS:
            msg = r.MSG_IMAGE_PULL_BACKOFF.format(image=image, container=cname, detail=detail)
            return at(Phase.PENDING, r.IMAGE_PULL_BACKOFF, msg)
        if why in CONFIG_ERROR_REASONS:
            msg = r.MSG_CONTAINER_CONFIG_ERROR.format(container=cname, detail=detail)
            expired = waited >= limits.image_pull_grace_s
            return at(Phase.FAILED if expired else Phase.PENDING, r.CONTAINER_CONFIG_ERROR, msg)
        if why == "CrashLoopBackOff":
            msg = r.MSG_CRASH_LOOP_BACKOFF.format(container=cname, detail=detail)
            exhausted = int(cs.get("restartCount") or 0) > limits.backoff_limit
            return at(Phase.FAILED if exhausted else stage_phase, r.CRASH_LOOP_BACKOFF, msg)
        break
    if not node:
        return at(Phase.PENDING, r.WAITING_FOR_POD, r.MSG_WAITING_FOR_POD)
    return at(
        Phase.PENDING, r.CONTAINER_CREATING, r.MSG_CONTAINER_CREATING.format(pod=name, node=node)
    )


def train_summary(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod's train container's termination-message summary."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs["name"] == contract.STAGE_TRAIN:
            term = (cs.get("state") or {}).get("terminated") or {}
            return parse_summary(term.get("message"))
    return {}


def _succeeded_summary(
    pods: Sequence[dict[str, Any]],
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The newest Succeeded pod and its train container's termination-message summary."""
    done = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
    if not done:
        return None, {}
    return done[-1], train_summary(done[-1])


def observe(
    job: dict[str, Any], pods: Sequence[dict[str, Any]], now: dt.datetime, limits: Limits
) -> Observation:
    """The run's phase, reason and message from its Job and all of its pods."""
    pods = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    failures = [pod_failure(p) for p in failed]
    # The Job's own count outlives deleted pods; pods seen failed cover a count not yet updated.
    counted = int((job.get("status") or {}).get("failed") or 0)
    attempts = max(counted, sum(1 for f in failures if not f.disrupted))
    newest = pods[-1] if pods else None
    where = Observation(
        Phase.PENDING,
        "",
        "",
        pod_name=newest["metadata"]["name"] if newest else None,
        node_name=newest["spec"].get("nodeName") if newest else None,
        furthest_stage=furthest_stage(pods),
        attempts=attempts,
        running_time=_started_at(newest) if newest else None,
    )

    def at(phase: Phase, reason: str, message: str) -> Observation:
        return replace(where, phase=phase, reason=reason, message=message)

    if _true(job, "Complete") or _true(job, "SuccessCriteriaMet"):
        pod, summary = _succeeded_summary(pods)
        if pod is not None:
            where = replace(
                where, pod_name=pod["metadata"]["name"], node_name=pod["spec"].get("nodeName")
            )
        return replace(at(Phase.SUCCEEDED, r.SUCCEEDED, r.MSG_SUCCEEDED), summary=summary)
    ended = _true(job, "Failed") or _true(job, "FailureTarget")
    if ended:
        last = failures[-1] if failures else None
        job_reason = ended.get("reason") or ""
        if job_reason == "DeadlineExceeded":
            msg = r.MSG_DEADLINE_EXCEEDED.format(seconds=limits.active_deadline_s)
            return at(Phase.FAILED, r.DEADLINE_EXCEEDED, msg)
        if last and last.reason in (r.OOM_KILLED, *PERMANENT_REASONS):
            return at(Phase.FAILED, last.reason, last.message)
        if job_reason == "BackoffLimitExceeded":
            msg = r.MSG_BACKOFF_LIMIT_EXCEEDED.format(
                attempts=attempts,
                limit=limits.backoff_limit,
                detail=last.message if last else ended.get("message", ""),
            )
            return at(Phase.FAILED, r.BACKOFF_LIMIT_EXCEEDED, msg)
        detail = last.message if last else (ended.get("message") or job_reason or "unknown")
        return at(Phase.FAILED, r.JOB_FAILED, r.MSG_JOB_FAILED.format(detail=detail))
    active = [p for p in pods if _active(p)]
    if active:
        obs = observe_active_pod(active[-1], now, limits)
        obs = replace(obs, furthest_stage=where.furthest_stage, attempts=attempts)
        if not failed or obs.reason not in (r.WAITING_FOR_POD, r.CONTAINER_CREATING):
            return obs
        # A replacement pod that has not started yet: why it exists says more than "waiting".
        where = replace(where, pod_name=obs.pod_name, node_name=obs.node_name)
    if any((p.get("status") or {}).get("phase") == "Succeeded" for p in pods):
        # The trainer is done; the Job controller has not marked the Job Complete yet.
        return at(Phase.TRAINING, r.COMPLETING, r.MSG_COMPLETING)
    if failed:
        last_pod, last = failed[-1], failures[-1]
        if last.reason in PERMANENT_REASONS:
            # The podFailurePolicy fails the Job on this exit code; say so before it does.
            return at(Phase.FAILED, last.reason, last.message)
        if last.disrupted:
            msg = r.MSG_DISRUPTED.format(
                pod=last_pod["metadata"]["name"], how=last.reason, detail=last.message
            )
            return at(Phase.PENDING, r.DISRUPTED, msg)
        if attempts > limits.backoff_limit:
            # No retry is left and the Job controller has not failed the Job yet: saying
            # "retrying" (and telling Labelbox so) would be wrong. The run stays in its stage.
            stage_phase = STAGE_PHASE.get(where.furthest_stage or "", Phase.PENDING)
            msg = r.MSG_FAILING.format(
                attempt=attempts, limit=limits.backoff_limit, detail=last.message
            )
            return at(stage_phase, r.FAILING, msg)
        msg = r.MSG_RETRYING.format(attempt=attempts, detail=last.message)
        return at(Phase.PENDING, r.RETRYING, msg)
    return at(Phase.PENDING, r.WAITING_FOR_POD, r.MSG_WAITING_FOR_POD)
