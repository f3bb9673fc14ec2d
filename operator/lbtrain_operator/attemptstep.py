"""The attempt step of a reconcile pass over a run of several pods (gang retry): observe the
current attempt and, once it failed with budget left, create the next attempt's Job; after the
status naming it is stored, delete the failed attempt's Job.

Whether an attempt failed, whether it may be retried and under which name are pure decisions
of `attempts`; this module only creates and deletes the Jobs and says what the status must
record. The order is what makes a restart safe: the next Job is created before the status
names it (a restart decides the same again and adopts it, `children.ensure_job`), and the
failed Job is deleted only after, so the status never names a Job that is gone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from lbtrain.kube import JOBS, KubeClient, NotFound
from lbtrain.resources.models import ModelRun
from lbtrain.resources.status import ModelRunStatus
from lbtrain_operator import admission, attempts, children, scale, templatesource
from lbtrain_operator import reasons as r
from lbtrain_operator.podstate import Limits, Observation
from lbtrain_operator.settings import Settings


@dataclass(frozen=True)
class Attempt:
    """What the step saw and what the pass must record: the status (naming the next attempt's
    Job once it exists), the failed attempt's Job to delete once that status is stored, and
    the Event message that tells of the next Job."""

    observation: Observation
    status: ModelRunStatus
    retired: str | None = None
    created: str | None = None


async def observe(
    kube: KubeClient,
    run: ModelRun,
    uid: str,
    job: dict[str, Any],
    pods: list[dict[str, Any]],
    status: ModelRunStatus,
    now: dt.datetime,
    limits: Limits,
    templates: admission.Templates,
    settings: Settings,
) -> Attempt:
    """A run of several pods: its current attempt, or the next one once it failed."""
    obs, following = attempts.observe(job, pods, attempts.stored(status), now, limits)
    if following is None:
        return Attempt(obs, status)
    refused = await create(kube, run, uid, following, templates, settings)
    if refused is not None:
        return Attempt(replace(refused.observation(), attempts=obs.attempts), status)
    return Attempt(
        obs,
        status.model_copy(update={"job_name": following}),
        retired=job["metadata"]["name"],
        created=r.MSG_JOB_CREATED_ATTEMPT.format(job=following, attempt=obs.attempt),
    )


async def create(
    kube: KubeClient,
    run: ModelRun,
    uid: str,
    name: str,
    templates: admission.Templates,
    settings: Settings,
) -> admission.Refused | None:
    """The next attempt's Job (and its rendezvous Service), built as the first one was,
    under the attempt's name; one an earlier operator made for this run is kept."""
    admitted = await templatesource.admit(kube, run, uid, templates, settings)
    if isinstance(admitted, admission.Refused):
        return admitted
    job = attempts.renamed(admitted.job, name)
    namespace = run.metadata.namespace or "default"
    service = scale.build_service(job, run.metadata.name, uid)
    refused = await children.ensure_service(kube, service, namespace, uid)
    if refused is not None:
        return refused
    got = await children.ensure_job(kube, job, namespace, uid)
    return got if isinstance(got, admission.Refused) else None


async def retire(kube: KubeClient, namespace: str, old: str | None, stored_job: str | None) -> bool:
    """Delete the failed attempt's Job `old` (its pods with it, in the background) once the
    stored status names the next attempt (`stored_job`): a restart then never looks for a
    deleted Job. Answers whether `old` is done with (deleted, or there was none).
    Its headless Service stays until the run is deleted (owned by it): it selects no pod,
    and the operator's Role has no `delete` on Services."""
    if old is None:
        return True
    if stored_job in (None, old):
        return False
    with contextlib.suppress(NotFound):
        await kube.delete(JOBS, old, namespace, propagation="Background")
    return True
