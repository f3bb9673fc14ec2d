"""Gang retry: a run of several pods retried as a whole, one Job per attempt: pure.

A run of M pods is one Indexed Job with `backoffLimit: 0` (`scale.indexed`): the Job controller
would otherwise replace one failed rank alone while the others wait for it in a collective. So
the Job is one *attempt*, and the operator retries: when an attempt's Job fails, it creates the
next attempt's Job, which resumes from the last checkpoint in the run's shared destination (rank
0 reads it, every rank receives its state). JobSet's `failurePolicy.maxRestarts` and Kubeflow
Trainer do the same by recreating every child Job; one Job per attempt keeps each attempt's pods,
conditions and failure inspectable, and its name says which attempt it is.

- Names: the first attempt keeps the Job name it always had (`<run>-train`), so a run that never
  fails looks exactly as before; attempt N > 1 is `<run>-train-aN`, and its rendezvous Service
  `rdzv-<job>` follows (pod hostnames `<job>-<i>` stay within 63 characters: Job names are at
  most 52, and `-aN` adds a few).
- Budget: the run's `backoffLimit` (its own, else its template's), recorded on each attempt's
  Job by `scale.indexed` (the Job's own `backoffLimit` is 0). A failed attempt spends one; an
  attempt that ended because a pod was disrupted (DisruptionTarget: eviction, preemption, a
  node drain) spends none, like the podFailurePolicy `Ignore` rule of a one-pod run. A failure
  retrying cannot fix (the trainer's bad-input exit, the deadline) fails the run at once.
- Memory: the current attempt and the failed attempts that spent the budget are in the ModelRun
  status. The decision is a function of what is stored and of the current attempt's Job as
  observed, and the next Job's name is a function of the attempt number, so an operator that
  restarts between creating the next Job and storing the status decides the same again and
  finds the Job it made (AlreadyExists).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from lbtrain import contract
from lbtrain.resources.models import Phase
from lbtrain.resources.status import ModelRunStatus
from lbtrain_operator import reasons as r
from lbtrain_operator import scale, workers
from lbtrain_operator.podstate import Limits, Observation
from lbtrain_operator.workers import Ended, Workers

ATTEMPT_SUFFIX: Final = "-a"


def job_name(first: str, attempt: int) -> str:
    """Attempt 1 keeps the run's Job name; attempt N > 1 is `<first>-aN`."""
    return first if attempt <= 1 else f"{first}{ATTEMPT_SUFFIX}{attempt}"


def first_job_name(name: str, attempt: int) -> str:
    """The first attempt's Job name, from attempt `attempt`'s."""
    suffix = f"{ATTEMPT_SUFFIX}{attempt}"
    return name[: -len(suffix)] if attempt > 1 and name.endswith(suffix) else name


@dataclass(frozen=True)
class Stored:
    """What the status says of the attempts: the current one (1-based) and the failed ones."""

    attempt: int = 1
    failed: int = 0
    reason: str | None = None  # the run's stored reason and message
    message: str | None = None


def stored(status: ModelRunStatus) -> Stored:
    return Stored(status.attempt or 1, status.failed_attempts or 0, status.reason, status.message)


RETRY_REASONS: Final = frozenset({r.RETRYING, r.DISRUPTED})
NOT_STARTED: Final = frozenset({r.WAITING_FOR_POD, r.CONTAINER_CREATING})


def budget_of(job: dict[str, Any]) -> int:
    """The run's retry budget, recorded on the attempt's Job."""
    raw = ((job.get("metadata") or {}).get("annotations") or {}).get(scale.ANNOTATION_RETRY_BUDGET)
    return int(raw) if isinstance(raw, str) and raw.isdigit() else 0


@dataclass(frozen=True)
class Retry:
    """Create attempt `attempt`; `failed` attempts have spent the budget."""

    attempt: int
    failed: int
    reason: str
    message: str


@dataclass(frozen=True)
class Fail:
    """The run failed: this was its last attempt, or retrying cannot help."""

    failed: int
    reason: str
    message: str


def decide(now: Stored, end: Ended, budget: int) -> Retry | Fail:
    """What follows the current attempt's failure `end`."""
    attempt = now.attempt
    if end.disrupted:
        msg = r.MSG_ATTEMPT_DISRUPTED.format(attempt=attempt, next=attempt + 1, detail=end.message)
        return Retry(attempt + 1, now.failed, r.DISRUPTED, msg)
    failed = now.failed + 1
    if end.permanent:
        return Fail(failed, end.reason, end.message)
    if failed > budget:
        msg = r.MSG_ATTEMPTS_EXHAUSTED.format(attempt=attempt, detail=end.message, limit=budget)
        # An OOM keeps its own reason (what to fix); any other failure says the budget is spent.
        reason = end.reason if end.reason == r.OOM_KILLED else r.BACKOFF_LIMIT_EXCEEDED
        return Fail(failed, reason, msg)
    msg = r.MSG_ATTEMPT_RETRYING.format(
        attempt=attempt, next=attempt + 1, detail=end.message, left=budget - failed, limit=budget
    )
    return Retry(attempt + 1, failed, r.RETRYING, msg)


def observe(
    job: dict[str, Any],
    pods: Sequence[dict[str, Any]],
    now: Stored,
    at: dt.datetime,
    limits: Limits,
) -> tuple[Observation, str | None]:
    """The run's observation from its current attempt's Job and pods (`workers.of_job`), and
    the Job the next attempt needs (None: no next attempt)."""
    rows = workers.workers(job, pods)
    end = workers.ended(job, pods, limits)
    if end is None:
        obs = workers.observe(job, pods, at, limits)
        if obs.reason in NOT_STARTED and now.reason in RETRY_REASONS and now.message:
            # A pod of the next attempt has not started: why the attempt exists says more than
            # "waiting" (and Labelbox keeps the notice until every pod runs).
            obs = replace(obs, reason=now.reason, message=now.message)
        return workers.with_attempt(obs, now.attempt, now.failed, rows), None
    decision = decide(now, end, budget_of(job))
    stage = workers.common_stage(job, pods)
    if isinstance(decision, Fail):
        obs = Observation(Phase.FAILED, decision.reason, decision.message, furthest_stage=stage)
        return workers.with_attempt(obs, now.attempt, decision.failed, rows), None
    current = job["metadata"]["name"]
    name = job_name(first_job_name(current, now.attempt), decision.attempt)
    obs = Observation(Phase.PENDING, decision.reason, decision.message, furthest_stage=stage)
    fresh = Workers((), f"0/{workers.wanted(job)}", 0)
    return workers.with_attempt(obs, decision.attempt, decision.failed, fresh), name


def renamed(job: dict[str, Any], name: str) -> dict[str, Any]:
    """`job` (as admission built it for attempt 1) as the Job named `name`: its pods' subdomain
    and rank 0's address follow the name, so the attempt has a rendezvous of its own."""
    out = copy.deepcopy(job)
    out["metadata"]["name"] = name
    pod = out["spec"]["template"]["spec"]
    pod["subdomain"] = scale.service_name(name)
    for container in pod.get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") == contract.ENV_PET_MASTER_ADDR:
                env["value"] = scale.master_addr(name)
    return out
