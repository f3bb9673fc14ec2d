"""A small asyncio Kubernetes client: just the verbs lbtrain uses, typed.

kopf brings its own API client for its watches; this one serves everything else (the webhook's
ModelRun creation and template cache, the operator's Job creation and status patches, the
testbed and its fake kubelet). Every error carries the API server's own status, reason and
message. Requests go over the client's own keep-alive HTTP/1.1 connections (`connections`),
because each one is on the webhook's critical path; watches use aiohttp, already in the process.
"""

from lbtrain.kube.client import KubeClient, WatchEvent
from lbtrain.kube.config import KubeConfig, load_config
from lbtrain.kube.errors import (
    AlreadyExists,
    ApiError,
    ApiUnreachable,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
)
from lbtrain.kube.resources import (
    CRDS,
    EVENTS,
    JOBS,
    LEASES,
    MODELRUNS,
    NAMESPACES,
    NODES,
    PERSISTENTVOLUMECLAIMS,
    PERSISTENTVOLUMES,
    PODS,
    SECRETS,
    SERVICEACCOUNTS,
    SERVICES,
    TOKENREVIEWS,
    TRAININGTEMPLATES,
    Resource,
)

__all__ = [
    "CRDS",
    "EVENTS",
    "JOBS",
    "LEASES",
    "MODELRUNS",
    "NAMESPACES",
    "NODES",
    "PERSISTENTVOLUMECLAIMS",
    "PERSISTENTVOLUMES",
    "PODS",
    "SECRETS",
    "SERVICEACCOUNTS",
    "SERVICES",
    "TOKENREVIEWS",
    "TRAININGTEMPLATES",
    "AlreadyExists",
    "ApiError",
    "ApiUnreachable",
    "Conflict",
    "Forbidden",
    "Invalid",
    "KubeClient",
    "KubeConfig",
    "NotFound",
    "Resource",
    "WatchEvent",
    "load_config",
]
