"""A small asyncio Kubernetes client: just the verbs lbtrain uses, typed, on aiohttp.

kopf brings its own API client for its watches; this one serves everything else (the webhook's
ModelRun creation and template cache, the operator's Job creation and status patches, the
testbed and its fake kubelet). Writing it on aiohttp keeps one HTTP stack in the process and
lets every error carry the API server's own status, reason and message.
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
    PODS,
    SECRETS,
    SERVICEACCOUNTS,
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
    "PODS",
    "SECRETS",
    "SERVICEACCOUNTS",
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
