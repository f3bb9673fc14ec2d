"""What a run's status becomes, given what it was and what its Job and pods show: pure.

A reconcile pass observes (`podstate.observe`), then folds the observation in here: phase,
reason and message (truncated to what a person reads), the first-running and completion
timestamps (set once, never moved), the two conditions `kubectl describe` shows, and the
Labelbox statuses the progress calls for, queued in the outbox (`progress`, `outbox`). Nothing
here talks to the API server or to Labelbox, so every rule is unit-tested on plain values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from lbtrain.resources.catalogue import task_for
from lbtrain.resources.models import ModelRun, Phase, TrainingTemplate
from lbtrain.resources.status import Condition, ModelRunStatus
from lbtrain.timestamps import iso
from lbtrain_operator import outbox, progress
from lbtrain_operator import reasons as r
from lbtrain_operator.podstate import Observation

MESSAGE_MAX = 4000  # status.message: the scheduler's or kubelet's words, bounded
CONDITION_MESSAGE_MAX = 2000
PROGRESS_PHASES = (Phase.EXPORTING, Phase.PREPARING, Phase.TRAINING)


def is_transition(status: ModelRunStatus, obs: Observation) -> bool:
    """Whether the observation moves the run to another phase or reason (worth an Event and
    a count in `lbtrain_modelrun_transitions_total`)."""
    return obs.phase is not status.phase or obs.reason != status.reason


def announces(obs: Observation) -> bool:
    """Whether a transition gets an Event of its own (JobCreated already said "waiting")."""
    return obs.reason != r.WAITING_FOR_POD


def starts_running(status: ModelRunStatus, obs: Observation) -> bool:
    """Whether this observation is the run's first stage running."""
    return obs.phase in PROGRESS_PHASES and not status.running_time


def conditions(old: list[Condition], obs: Observation, now: str) -> list[Condition]:
    """Running and Finished; a condition's transition time moves only when its value does."""
    previous = {c.type: c for c in old}
    wanted = {
        "Running": "True" if obs.phase in PROGRESS_PHASES else "False",
        "Finished": "True" if obs.finished else "False",
    }
    out = []
    for type_, value in wanted.items():
        prev = previous.get(type_)
        out.append(
            Condition(
                type=type_,
                status=value,
                reason=obs.reason or "Unknown",
                message=obs.message[:CONDITION_MESSAGE_MAX],
                last_transition_time=(
                    prev.last_transition_time if prev and prev.status == value else now
                ),
            )
        )
    return out


def record_job(
    status: ModelRunStatus, job_name: str, template: TrainingTemplate, now: dt.datetime
) -> ModelRunStatus:
    """The run has its Job (created now, or found from an earlier operator)."""
    return status.model_copy(
        update={
            "job_name": job_name,
            "template_name": template.metadata.name,
            "template_generation": template.metadata.generation,
            "task": task_for(template.spec.model_type, template.spec.task),
            "image": template.spec.image,
            "gpus": template.spec.gpus,
            "start_time": status.start_time or iso(now),
        }
    )


def job_created_message(job: str, run: ModelRun, template: TrainingTemplate) -> str:
    """The JobCreated Event: the template and generation used, and the generation Labelbox
    listed when that differs (the template was edited while the run waited)."""
    generation = template.metadata.generation or 0
    message = r.MSG_JOB_CREATED.format(
        job=job, template=template.metadata.name, generation=generation
    )
    listed = run.spec.template
    if listed is not None and listed.generation and listed.generation != generation:
        message += r.MSG_TEMPLATE_EDITED.format(listed=listed.generation)
    return message


def fold(
    status: ModelRunStatus, obs: Observation, now: dt.datetime, generation: int | None
) -> ModelRunStatus:
    """The status after `obs`, with the Labelbox statuses it calls for queued."""
    stamp = iso(now)
    running_time = status.running_time
    if starts_running(status, obs):
        running_time = obs.running_time or stamp
    completion_time = status.completion_time
    if obs.finished and not completion_time:
        completion_time = stamp
    gang: dict[str, Any] = {}
    if obs.attempt is not None:  # a run of several pods: its attempt and its pods
        gang = {
            "attempt": obs.attempt,
            "failed_attempts": obs.failed_attempts,
            "workers": list(obs.workers) if obs.workers is not None else status.workers,
            "workers_up": obs.workers_up or status.workers_up,
            "workers_omitted": obs.workers_omitted or None,
        }
    new = status.model_copy(
        update={
            **gang,
            "phase": obs.phase,
            "reason": obs.reason,
            "message": obs.message[:MESSAGE_MAX],
            "attempts": obs.attempts,
            "observed_generation": generation,
            "pod_name": obs.pod_name or status.pod_name,
            "node_name": obs.node_name or status.node_name,
            "summary": obs.summary or status.summary,
            "running_time": running_time,
            "completion_time": completion_time,
            "conditions": conditions(status.conditions, obs, stamp),
        }
    )
    box = new.labelbox
    queued = progress.to_enqueue(outbox.last_queued(box), progress.statuses_for(obs))
    error = progress.error_message(obs.reason, obs.message) if obs.phase is Phase.FAILED else None
    meta = progress.metadata(_meta_view(new), obs)
    if obs.attempt is not None:
        # Which attempt runs, and how many of its pods: one value per change, never an
        # earlier attempt's (only the current attempt's pods are read).
        meta |= {"attempt": obs.attempt, "workers": obs.workers_up or new.workers_up or ""}
    box = outbox.enqueue(box, queued, meta, error, progress.notice(obs))
    return new.model_copy(update={"labelbox": box})


def _meta_view(status: ModelRunStatus) -> Mapping[str, Any]:
    """The status fields `progress.metadata` reads, as on the wire."""
    return status.model_dump(by_alias=True, mode="json", exclude={"labelbox", "conditions"})


def must_suspend(obs: Observation, job_finished: bool) -> bool:
    """Failures Kubernetes does not end by itself (an image that never pulls, a crash loop):
    suspend the Job, which stops its pods and keeps it for inspection."""
    return obs.phase is Phase.FAILED and not job_finished


def job_finished(job: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )
