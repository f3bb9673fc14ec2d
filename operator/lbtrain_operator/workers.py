"""What a run of several pods is doing, read from its current attempt's Job and pods: pure.

`podstate.observe` reads a one-pod run from its newest pod. A run of M pods (one Indexed Job per
attempt, `scale.indexed`) is as far as its slowest pod: rank 0 may train while rank 1 still
prepares, and no rank trains before all of them joined the rendezvous. So the run's stage is the
furthest stage *every* pod reached, its waiting reason is that of the pod furthest behind (an
unschedulable rank 1 holds the whole run), and the status lists every pod (index, pod, node,
stage, state, reason, restarts), bounded, so `kubectl describe mr` shows which rank is where.

Only the current attempt's pods are read (`of_job`): the previous attempt's pods linger while
their Job is garbage-collected, and mixing them in is what made the metadata flap between an
old attempt's failure and the new pod's stage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from lbtrain import contract
from lbtrain.resources.models import Phase
from lbtrain.resources.status import WorkerRow
from lbtrain_operator import podstate
from lbtrain_operator import reasons as r
from lbtrain_operator.podstate import Limits, Observation

MAX_ROWS: Final = 16  # rows kept in the status; the rest are counted (`workersOmitted`)
INDEX_ANNOTATION: Final = "batch.kubernetes.io/job-completion-index"
PHASE_ORDER: Final = (Phase.PENDING, Phase.EXPORTING, Phase.PREPARING, Phase.TRAINING)


def is_gang(job: dict[str, Any]) -> bool:
    """Whether the Job is one attempt of a run of several pods (`scale.indexed`)."""
    spec = job.get("spec") or {}
    return spec.get("completionMode") == "Indexed" and int(spec.get("completions") or 1) > 1


def wanted(job: dict[str, Any]) -> int:
    return int((job.get("spec") or {}).get("completions") or 1)


def of_job(pods: Sequence[dict[str, Any]], job: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods the Job made (its controller reference), not an earlier attempt's."""
    uid, name = job["metadata"].get("uid"), job["metadata"]["name"]
    out = []
    for pod in pods:
        owners = pod["metadata"].get("ownerReferences") or []
        if any(o.get("kind") == "Job" and (o.get("uid") or uid) == uid and o.get("name") == name
               for o in owners):  # fmt: skip
            out.append(pod)
    return out


def index_of(pod: dict[str, Any]) -> int | None:
    meta = pod["metadata"]
    raw = (meta.get("annotations") or {}).get(INDEX_ANNOTATION) or (meta.get("labels") or {}).get(
        INDEX_ANNOTATION
    )
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


def by_index(pods: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The newest pod of each completion index."""
    out: dict[int, dict[str, Any]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
        index = index_of(pod)
        if index is not None:
            out[index] = pod
    return out


def _phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def _stage_of(pod: dict[str, Any]) -> str | None:
    """The stage container that runs, else the last one that ran."""
    stage = None
    for cs in podstate.container_statuses(pod):
        state = cs.get("state") or {}
        if cs["name"] not in contract.STAGES:
            continue
        if "running" in state:
            return str(cs["name"])
        if "terminated" in state:
            stage = str(cs["name"])
    return stage


def _runs(pod: dict[str, Any]) -> bool:
    return any("running" in (cs.get("state") or {}) for cs in podstate.container_statuses(pod))


def _reason_of(pod: dict[str, Any]) -> str | None:
    """Why the pod waits or ended, in Kubernetes' words (or the operator's for a failure)."""
    if _phase(pod) == "Failed":
        return podstate.pod_failure(pod).reason
    scheduled = podstate.conditions_of(pod).get("PodScheduled") or {}
    if scheduled.get("status") == "False":
        return str(scheduled.get("reason") or "Unschedulable")
    for cs in podstate.container_statuses(pod):
        state = cs.get("state") or {}
        if "waiting" in state:
            return str(state["waiting"].get("reason") or "Waiting")
        if "running" in state:
            return None
    return None


def row(index: int, pod: dict[str, Any]) -> WorkerRow:
    restarts = sum(int(cs.get("restartCount") or 0) for cs in podstate.container_statuses(pod))
    return WorkerRow(
        index=index,
        pod=pod["metadata"]["name"],
        node=(pod.get("spec") or {}).get("nodeName"),
        stage=_stage_of(pod),
        state=_phase(pod),
        reason=_reason_of(pod),
        restarts=restarts,
    )


@dataclass(frozen=True)
class Workers:
    """The rows the status shows, how many pods run or are done of how many wanted, and how
    many rows were left out."""

    rows: tuple[WorkerRow, ...]
    up: str
    omitted: int


def workers(job: dict[str, Any], pods: Sequence[dict[str, Any]]) -> Workers:
    indexed = by_index(pods)
    rows = [row(i, indexed[i]) for i in sorted(indexed)]
    # Up: a stage container runs (init containers run while the pod is Pending) or it is done.
    up = sum(1 for p in indexed.values() if _phase(p) == "Succeeded" or _runs(p))
    return Workers(tuple(rows[:MAX_ROWS]), f"{up}/{wanted(job)}", max(0, len(rows) - MAX_ROWS))


def common_stage(job: dict[str, Any], pods: Sequence[dict[str, Any]]) -> str | None:
    """The furthest stage every pod of the Job reached (None until every index has a pod that
    started one): what the run as a whole has reached."""
    indexed = by_index(pods)
    if len(indexed) < wanted(job):
        return None
    reached = [podstate.furthest_stage([p]) for p in indexed.values()]
    if any(s is None for s in reached):
        return None
    return min((s for s in reached if s is not None), key=contract.STAGES.index)


@dataclass(frozen=True)
class Ended:
    """Why an attempt (its Job) failed: the first pod that failed, with its index and node."""

    reason: str
    message: str
    disrupted: bool
    permanent: bool


def _failed_at(pod: dict[str, Any]) -> tuple[str, bool]:
    """When a failed pod ended (its first container's finish, else its DisruptionTarget time),
    and whether it was being deleted: at the same second, a pod that failed by itself comes
    before the ones the Job controller then stopped."""
    times = [
        str(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt") or "")
        for cs in podstate.container_statuses(pod)
    ]
    cond = podstate.conditions_of(pod).get("DisruptionTarget") or {}
    times.append(str(cond.get("lastTransitionTime") or ""))
    known = [t for t in times if t]
    deleting = bool(pod["metadata"].get("deletionTimestamp"))
    return (min(known) if known else "~", deleting)  # unknown sorts last


def ended(job: dict[str, Any], pods: Sequence[dict[str, Any]], limits: Limits) -> Ended | None:
    """Why the attempt failed, once the Job controller says so and no pod of it runs any more
    (so the next attempt never overlaps a rank of this one); None while it has not ended."""
    cond = podstate.true_condition(job, "Failed") or podstate.true_condition(job, "FailureTarget")
    if cond is None:
        return None
    if not podstate.true_condition(job, "Failed") and any(
        _phase(p) in ("Pending", "Running") for p in pods
    ):
        return None
    job_reason = str(cond.get("reason") or "")
    if job_reason == "DeadlineExceeded":
        msg = r.MSG_DEADLINE_EXCEEDED.format(seconds=limits.active_deadline_s)
        return Ended(r.DEADLINE_EXCEEDED, msg, disrupted=False, permanent=True)
    failed = [p for p in pods if _phase(p) == "Failed"]
    disrupted = [p for p in failed if podstate.pod_failure(p).disrupted]
    if disrupted or "DisruptionTarget" in str(cond.get("message") or ""):
        first = min(disrupted, key=_failed_at) if disrupted else None
        return _ended(first, cond, disrupted=True)
    return _ended(min(failed, key=_failed_at) if failed else None, cond, disrupted=False)


def _ended(pod: dict[str, Any] | None, cond: dict[str, Any], disrupted: bool) -> Ended:
    if pod is None:
        detail = str(cond.get("message") or cond.get("reason") or "the Job failed")
        return Ended(r.JOB_FAILED, detail, disrupted=disrupted, permanent=False)
    failure = podstate.pod_failure(pod)
    where = r.MSG_WORKER_FAILED.format(
        index=index_of(pod),
        pod=pod["metadata"]["name"],
        node=(pod.get("spec") or {}).get("nodeName") or "?",
        detail=failure.message,
    )
    permanent = failure.reason in podstate.PERMANENT_REASONS
    return Ended(failure.reason, where, disrupted=disrupted, permanent=permanent)


def _rank(phase: Phase) -> int:
    return PHASE_ORDER.index(phase) if phase in PHASE_ORDER else len(PHASE_ORDER)


def observe(
    job: dict[str, Any], pods: Sequence[dict[str, Any]], now: dt.datetime, limits: Limits
) -> Observation:
    """The attempt's observation while it has not failed: succeeded (rank 0's summary), or the
    pod furthest behind (its stage, or why it waits), with the stage every pod reached."""
    indexed = by_index(pods)
    stage = common_stage(job, pods)
    first = indexed.get(0)
    base = Observation(
        Phase.PENDING,
        r.WAITING_FOR_POD,
        r.MSG_WAITING_FOR_POD,
        pod_name=first["metadata"]["name"] if first else None,
        node_name=(first.get("spec") or {}).get("nodeName") if first else None,
        furthest_stage=stage,
        running_time=min(
            (t for p in indexed.values() if (t := podstate.started_at(p))),
            default=None,
        ),
    )
    if podstate.true_condition(job, "Complete") or podstate.true_condition(
        job, "SuccessCriteriaMet"
    ):
        summary = podstate.train_summary(first) if first else {}
        return replace(
            base, phase=Phase.SUCCEEDED, reason=r.SUCCEEDED, message=r.MSG_SUCCEEDED,
            summary=summary,
        )  # fmt: skip
    active = {i: p for i, p in indexed.items() if _phase(p) in ("Pending", "Running")}
    if len(indexed) < wanted(job) or not active:
        if indexed and all(_phase(p) == "Succeeded" for p in indexed.values()):
            return replace(
                base, phase=Phase.TRAINING, reason=r.COMPLETING, message=r.MSG_COMPLETING
            )
        return base
    seen = {i: podstate.observe_active_pod(p, now, limits) for i, p in active.items()}
    behind = min(seen, key=lambda i: (_rank(seen[i].phase), i))
    obs = seen[behind]
    if obs.phase is Phase.FAILED:  # an image that never pulls: the run fails as a whole
        return replace(obs, furthest_stage=stage, running_time=base.running_time)
    if obs.reason == r.STAGE_RUNNING:
        stage_name = stage or contract.STAGE_EXPORT
        msg = r.MSG_WORKERS_RUNNING.format(
            stage=stage_name, up=len(active), wanted=wanted(job), job=job["metadata"]["name"]
        )
        obs = replace(obs, message=msg, pod_name=base.pod_name, node_name=base.node_name)
    return replace(obs, furthest_stage=stage, running_time=base.running_time)


def with_attempt(obs: Observation, attempt: int, failed: int, rows: Workers) -> Observation:
    """`obs` of attempt `attempt`, `failed` attempts spent, with its pods' rows."""
    return replace(
        obs,
        attempt=attempt,
        failed_attempts=failed,
        attempts=failed,
        workers=rows.rows,
        workers_up=rows.up,
        workers_omitted=rows.omitted,
    )
