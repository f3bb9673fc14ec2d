"""Create the objects a run owns (its Job, its rendezvous Service, its artifacts claim), or
adopt the one an earlier operator created for it: the thin I/O step both the first Job
(`reconcile`) and each later attempt's (`attemptstep`) go through.

Each object is created straight away (one request, not a GET first); only when its name is
taken is it read, and it is adopted only when it is the run's own (`owners`, `storage`). An
operator that died between creating an object and recording it then carries on where it
stopped, and a leftover of a deleted run of the same name is never mistaken for the run's.
What the API server refuses for good becomes the run's failure (`admission`); anything else is
raised and retried.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from lbtrain.kube import (
    JOBS,
    PERSISTENTVOLUMECLAIMS,
    SERVICES,
    AlreadyExists,
    ApiError,
    Conflict,
    KubeClient,
    Resource,
)
from lbtrain_operator import admission, owners, storage

# The API server's answer to a create (status, message) as the run's failure; None: retry.
Refuse = Callable[[int, str], admission.Refused | None]


def not_ours(kind: str, name: str) -> Conflict:
    """An object of the run's name that belongs to a deleted ModelRun of the same name, not yet
    garbage-collected: the pass fails and is retried until it is gone."""
    return Conflict(
        409,
        "Conflict",
        f"{kind} {name} belongs to another ModelRun; waiting for the garbage collector to "
        "remove it",
    )


async def create_or_get(
    kube: KubeClient, resource: Resource, obj: dict[str, Any], namespace: str, refuse: Refuse
) -> dict[str, Any] | admission.Refused | None:
    """Create `obj`: None once created, the object already there under its name, or the
    server's refusal of it."""
    try:
        # The answer echoes the object (a Job is the largest body a pass handles); nothing
        # reads it.
        await kube.create(resource, obj, namespace, decode=False)
        return None
    except AlreadyExists:
        return await kube.get(resource, obj["metadata"]["name"], namespace)
    except ApiError as exc:
        refused = refuse(exc.status, exc.message)
        if refused is None:
            raise
        return refused


async def ensure_job(
    kube: KubeClient, job: dict[str, Any], namespace: str, uid: str
) -> tuple[dict[str, Any], bool] | admission.Refused:
    """The run's Job and whether this call created it (else it is the one an earlier operator
    created for the run), or why the server refused it."""
    got = await create_or_get(kube, JOBS, job, namespace, admission.refused_by_server)
    if got is None:
        return job, True
    if isinstance(got, admission.Refused):
        return got
    if not owners.owned_by(got, uid):
        raise not_ours("Job", job["metadata"]["name"])
    return got, False


async def ensure_claim(
    kube: KubeClient, claim: dict[str, Any], namespace: str, run_name: str, uid: str
) -> admission.Refused | None:
    """Create the run's artifacts claim before its Job; an existing one is reused only when
    it was made for this run (`storage.claim_owner`)."""
    name = claim["metadata"]["name"]
    got = await create_or_get(
        kube,
        PERSISTENTVOLUMECLAIMS,
        claim,
        namespace,
        partial(admission.claim_refused_by_server, name),
    )
    if got is None or isinstance(got, admission.Refused):
        return got
    owner = storage.claim_owner(got, run_name, uid)
    return None if owner is None else admission.claim_taken(name, owner)


async def ensure_service(
    kube: KubeClient, service: dict[str, Any], namespace: str, uid: str
) -> admission.Refused | None:
    """Create the headless Service the pods of a multi-pod run find rank 0 through, before
    its Job (`scale.build_service`); one left by an earlier operator for this run is kept."""
    name = service["metadata"]["name"]
    got = await create_or_get(
        kube, SERVICES, service, namespace, partial(admission.service_refused_by_server, name)
    )
    if got is None or isinstance(got, admission.Refused):
        return got
    if not owners.owned_by(got, uid):
        raise not_ours("Service", name)
    return None
