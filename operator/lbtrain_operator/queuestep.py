"""The queue step of a reconcile pass: what the run shows while Kueue holds its Job.

Kueue admits a Job by unsuspending it; until then the run's status says it is Queued, why
(the Workload's conditions) and, where Kueue's visibility API is served, its place in the
LocalQueue. This module only reads those from the API server; what they mean is decided by
the pure functions of `queueing`. A cluster without Kueue, or an operator whose Role cannot
read Workloads, still gets a Queued status, with the reason it could not be read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from lbtrain.kube import ApiError, ApiUnreachable, KubeClient
from lbtrain_operator import queueing
from lbtrain_operator.podstate import Observation


async def observe(
    kube: KubeClient,
    namespace: str,
    job: dict[str, Any],
    pods: Sequence[dict[str, Any]],
    *,
    just_created: bool,
) -> Observation:
    """Why Kueue holds the Job: its Workload (none yet right after the Job was created, so
    not looked for then) and the Workload's place from the visibility API, which may not be
    served (left out then)."""
    workload = pending = unreadable = None
    if not just_created:
        try:
            listed = await kube.list(
                queueing.WORKLOADS, namespace, label_selector=queueing.workload_selector(job)
            )
            workload = queueing.workload_of(job, listed.get("items") or [])
        except ApiError as exc:
            if exc.status not in queueing.NO_KUEUE_STATUSES:
                raise
            unreadable = exc.message
    queue = queueing.queue_of(job)
    if workload is not None and queue:
        path = queueing.VISIBLE_LOCALQUEUES.path(namespace, queue) + "/pendingworkloads"
        with contextlib.suppress(ApiError, ApiUnreachable):
            pending = await kube.request("GET", path)
    return queueing.observe_queued(job, workload, pending, pods, unreadable)
