"""Kubernetes Events about a ModelRun (`kubectl describe mr` shows them), posted by the pass
that decided them, through the operator's own API client.

Why not `kopf.event`: kopf posts each object's Events from a worker of its own, on a connection
pool without a limit. When a burst's held statuses are written (`burst.py`), a thousand Events
at once became hundreds of new TLS connections to the API server. Posted here, they go through
the client's bounded, kept-alive connections, a few at a time (`Context.event_slots`), after
the status they describe.

An Event is a record for people, not state: one that cannot be posted is logged and dropped,
and never fails the pass that made it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from lbtrain.kube import EVENTS, ApiError, ApiUnreachable, KubeClient
from lbtrain.resources.models import Phase
from lbtrain_operator.reasons import WARNING_REASONS

log = logging.getLogger("lbtrain.operator")

COMPONENT = "lbtrain-operator"  # the "From" column of `kubectl describe`
MAX_MESSAGE = 1024  # the API server refuses longer Event messages


def event_type(phase: Phase, reason: str) -> str:
    """Warning for a failed run and for reasons a person should look at while it goes on
    (`reasons.WARNING_REASONS`); Normal for progress."""
    return "Warning" if phase is Phase.FAILED or reason in WARNING_REASONS else "Normal"


def event_body(
    obj: Mapping[str, Any], type_: str, reason: str, message: str, now: dt.datetime
) -> dict[str, Any]:
    """A core/v1 Event about `obj` (a ModelRun as read from the API server)."""
    meta = obj["metadata"]
    stamp = now.isoformat().replace("+00:00", "Z")
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post(kube: KubeClient, body: Mapping[str, Any]) -> bool:
    """Post one Event; answer whether it was stored (a failure is logged, not raised)."""
    try:
        await kube.create(EVENTS, dict(body), body["metadata"]["namespace"], decode=False)
    except (ApiError, ApiUnreachable) as exc:
        log.warning(
            "could not post an Event",
            extra={
                "modelrun": f"{body['metadata']['namespace']}/{body['involvedObject']['name']}",
                "reason": body["reason"],
                "error": str(exc),
            },
        )
        return False
    return True
