"""Queueing through Kueue: which queue a run asks for, the Job shape Kueue queues, and what the
run says while Kueue holds it. Pure functions; `reconcile` does the two reads.

On a shared GPU cluster batch work waits in Kueue's queues instead of bypassing every quota. A
run with a queue (the ModelRun's `spec.queueName`, else its TrainingTemplate's, else the
operator's `--default-queue`) gets a Job labelled `kueue.x-k8s.io/queue-name: <LocalQueue>`
and created with `spec.suspend: true`. Kueue's webhook would suspend it anyway; creating it
suspended means no pod can start in the instant before Kueue sees it, and the Job does not
depend on the webhook's configuration. Kueue makes a Workload for the Job (owned by the Job,
labelled with its UID), and unsuspends the Job once the Workload is admitted. A run without a
queue gets exactly the Job it always had, and the operator never reads a Workload for it: a
cluster without Kueue sees no extra request and needs no Kueue RBAC.

While the Job is suspended by Kueue the run's reason is `Queued` and its message is Kueue's own
(the Workload's `QuotaReserved=False` message, e.g. "couldn't assign flavors to pod set main:
insufficient unused quota for cpu in flavor default, 1 more needed"), with the Workload's place
in its LocalQueue when Kueue's visibility API answers. Kueue preempting or evicting the run
suspends its Job again: the pods are deleted without counting as failures (the Job controller
removes their tracking finalizer first), and the run is `Queued` again, not failed.

The queue name is read from the objects as stored, not through `lbtrain.resources`: only the
operator reads it (the trainer never does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lbtrain.kube import Resource
from lbtrain.resources.models import Phase
from lbtrain_operator import owners
from lbtrain_operator import reasons as r
from lbtrain_operator.podstate import Observation, furthest_stage

GROUP = "kueue.x-k8s.io"
QUEUE_LABEL = f"{GROUP}/queue-name"
JOB_UID_LABEL = f"{GROUP}/job-uid"
WORKLOADS = Resource(GROUP, "v1beta2", "workloads", "Workload")
# The visibility API's LocalQueue, whose `pendingworkloads` subresource lists the queue's order.
VISIBLE_LOCALQUEUES = Resource(f"visibility.{GROUP}", "v1beta2", "localqueues", "LocalQueue")
# How often a queued run is looked at again: Kueue's message and the run's place change without
# any Job or pod event that would wake the run.
POLL_S = 10.0
# Answers to a Workload list that mean Kueue is not there for the operator (no CRD: 404; the
# chart's Kueue RBAC not enabled: 403): the run says so instead of failing the pass.
NO_KUEUE_STATUSES = frozenset({403, 404})


def queue_name(
    run: Mapping[str, Any], template: Mapping[str, Any], default: str = ""
) -> str | None:
    """The LocalQueue a run waits in: the run's `spec.queueName`, else its template's, else the
    operator's default; None (no queueing) when all three are unset or empty."""
    for body in (run, template):
        name = (body.get("spec") or {}).get("queueName")
        if isinstance(name, str) and name:
            return name
    return default or None


def queued_job(job: dict[str, Any], queue: str | None) -> dict[str, Any]:
    """The Job as Kueue queues it: labelled with its LocalQueue and created suspended. Without
    a queue, the Job itself, unchanged."""
    if not queue:
        return job
    meta = job["metadata"]
    return {
        **job,
        "metadata": {**meta, "labels": {**(meta.get("labels") or {}), QUEUE_LABEL: queue}},
        "spec": {**job["spec"], "suspend": True},
    }


def queue_of(job: Mapping[str, Any]) -> str | None:
    """The LocalQueue a Job was created for (None: not queued)."""
    return ((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL) or None


def _finished(job: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed", "FailureTarget", "SuccessCriteriaMet")
        and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def held(job: Mapping[str, Any]) -> bool:
    """Whether Kueue holds the Job: it has a queue, is suspended, and has not finished. Only
    then are Workloads read."""
    return (
        queue_of(job) is not None
        and bool((job.get("spec") or {}).get("suspend"))
        and not _finished(job)
    )


def workload_selector(job: Mapping[str, Any]) -> str:
    """The label selector of the Job's Workload (Kueue labels it with the Job's UID)."""
    return f"{JOB_UID_LABEL}={job['metadata']['uid']}"


def workload_of(
    job: Mapping[str, Any], workloads: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """The Job's Workload among `workloads`: the one owned by the Job (a leftover of a deleted
    Job of the same name has another owner UID)."""
    uid = job["metadata"]["uid"]
    for workload in workloads:
        if owners.owned_by(workload, uid):
            return dict(workload)
    return None


def _condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), {})


def position(pending: Mapping[str, Any] | None, workload: Mapping[str, Any] | None) -> int | None:
    """The Workload's place in its LocalQueue (1: next) from the visibility API's
    `pendingworkloads` answer; None when it is not listed or there is no answer."""
    if not pending or not workload:
        return None
    name = (workload.get("metadata") or {}).get("name")
    for item in pending.get("items") or []:
        if (item.get("metadata") or {}).get("name") == name:
            place = item.get("positionInLocalQueue")
            return int(place) + 1 if isinstance(place, int) else None
    return None


def why_waiting(workload: Mapping[str, Any] | None, unreadable: str | None = None) -> str:
    """Kueue's own words for why the Workload is not running: the `QuotaReserved=False`
    message while it waits for quota, the `Admitted=False` message while admission checks
    run, preceded by the eviction (preemption, PodsReady timeout) that put it back.
    `unreadable`: why Workloads could not be read."""
    if unreadable is not None:
        return r.MSG_QUEUED_UNREADABLE.format(detail=unreadable)
    if workload is None:
        return r.MSG_QUEUED_NO_WORKLOAD
    reserved = _condition(workload, "QuotaReserved")
    admitted = _condition(workload, "Admitted")
    if reserved.get("status") != "True":
        detail = str(reserved.get("message") or reserved.get("reason") or "no quota reserved yet")
    elif admitted.get("status") != "True":
        detail = str(admitted.get("message") or admitted.get("reason") or "not admitted yet")
    else:
        return r.MSG_QUEUED_ADMITTED
    evicted = _condition(workload, "Evicted")
    if evicted.get("status") == "True":
        prefix = r.MSG_QUEUED_EVICTED.format(
            reason=evicted.get("reason") or "Evicted",
            detail=evicted.get("message") or "no message",
        )
        detail = prefix + detail
    return detail


def observe_queued(
    job: Mapping[str, Any],
    workload: Mapping[str, Any] | None,
    pending: Mapping[str, Any] | None,
    pods: Sequence[dict[str, Any]] = (),
    unreadable: str | None = None,
) -> Observation:
    """The run while Kueue holds its Job: Pending, reason `Queued`, Kueue's message and the
    place in the queue where known. The retries spent are the Job's own count: pods deleted by
    a preemption are not failures."""
    detail = why_waiting(workload, unreadable)
    place = position(pending, workload)
    if place is not None:
        detail += r.MSG_QUEUED_POSITION.format(position=place)
    failed = int((job.get("status") or {}).get("failed") or 0)
    message = r.MSG_QUEUED.format(queue=queue_of(job) or "?", detail=detail)
    return Observation(
        Phase.PENDING,
        r.QUEUED,
        message,
        furthest_stage=furthest_stage(pods),
        attempts=failed,
    )
