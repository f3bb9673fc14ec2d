"""Creating the ModelRun for a request, exactly once per `modelRunId`.

The name is a function of `modelRunId`, so the API server itself is the idempotency record:
the first delivery creates the object (201); a repeat finds it (AlreadyExists), reads it and
answers the same success (200) when it asks for the same thing, or 409 when the same
`modelRunId` now comes with a different body. Concurrent duplicates race on the create; the API
server lets exactly one win. Nothing is held in memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lbtrain.kube import MODELRUNS, AlreadyExists, ApiError, ApiUnreachable, KubeClient, NotFound
from lbtrain.resources.catalogue import Listing
from lbtrain.resources.names import (
    API_GROUP,
    FINALIZER,
    LABEL_MANAGED_BY,
    LABEL_MODEL_RUN_ID,
    LABEL_MODEL_TYPE,
    MANAGED_BY,
    is_label_value,
    label_value,
)
from lbtrain_webhook.errors import WebhookError
from lbtrain_webhook.naming import model_run_name
from lbtrain_webhook.payload import ModelRunRequest

ANNOTATION_MODEL_RUN_ID = LABEL_MODEL_RUN_ID  # the exact id, whatever its characters
ANNOTATION_MODEL_TYPE = LABEL_MODEL_TYPE  # the exact model type (the label may be sanitised)
ANNOTATION_CREATED_BY = f"{API_GROUP}/created-by"
CREATED_BY = "lbtrain-webhook"
IDENTITY = ("modelRunId", "modelType", "modelId", "organizationId")


@dataclass(frozen=True)
class Outcome:
    name: str
    created: bool


def build_model_run(request: ModelRunRequest, listed: Listing | None = None) -> dict[str, Any]:
    """The ModelRun object (without apiVersion/kind, which the client adds) for a request.

    It records the template Labelbox listed under the request's name (`listed`), with the
    generation the webhook saw, so the operator builds the Job from exactly that template.
    It carries the operator's finalizer from the start: a run deleted before the operator first
    saw it still reaches the operator's deletion handler (so Labelbox hears "cancelled"), and
    the operator is spared one PATCH per run to add it.
    """
    labels = {LABEL_MANAGED_BY: MANAGED_BY}
    type_label = label_value(request.model_type)
    if type_label:
        labels[LABEL_MODEL_TYPE] = type_label
    if is_label_value(request.model_run_id):
        labels[LABEL_MODEL_RUN_ID] = request.model_run_id
    return {
        "metadata": {
            "name": model_run_name(request.model_run_id),
            "finalizers": [FINALIZER],
            "labels": labels,
            "annotations": {
                ANNOTATION_MODEL_RUN_ID: request.model_run_id,
                ANNOTATION_MODEL_TYPE: request.model_type,
                ANNOTATION_CREATED_BY: CREATED_BY,
            },
        },
        "spec": _spec(request, listed),
    }


def _spec(request: ModelRunRequest, listed: Listing | None) -> dict[str, Any]:
    spec: dict[str, Any] = dict(request.spec())
    if listed is not None:
        spec["template"] = {"name": listed.template, "generation": listed.generation}
    return spec


def differences(existing_spec: Mapping[str, Any], request: ModelRunRequest) -> list[str]:
    """The identity fields in which an existing ModelRun differs from `request` (empty: same)."""
    wanted = request.spec()
    return [f for f in IDENTITY if existing_spec.get(f) != wanted.get(f)]


def conflict(name: str, fields: list[str], existing_spec: Mapping[str, Any]) -> WebhookError:
    if "modelRunId" in fields:
        detail = (
            f"ModelRun {name} already exists for a different modelRunId "
            f"({str(existing_spec.get('modelRunId'))[:128]!r}); the derived names collide"
        )
    else:
        detail = (
            f"ModelRun {name} already exists for this modelRunId with a different "
            f"{', '.join(fields)}; a model run's identity cannot change"
        )
    return WebhookError(409, "conflict", detail)


def unavailable(exc: Exception) -> WebhookError:
    return WebhookError(
        503, "unavailable", f"the Kubernetes API is unavailable; nothing was created ({_kind(exc)})"
    )


def _kind(exc: Exception) -> str:
    return exc.reason if isinstance(exc, ApiError) and exc.reason else type(exc).__name__


async def create_model_run(
    kube: KubeClient, namespace: str, request: ModelRunRequest, listed: Listing | None = None
) -> Outcome:
    """Create the request's ModelRun (recording `listed`, the template serving its name), or
    confirm that an identical one exists (the template is not part of a run's identity: a
    repeated delivery after the template changed is the same run).

    Raises WebhookError: 409 (same id, different body), 503 (API unreachable or failing),
    422 (the API server refused the object). Anything else is an ApiError for the caller.
    """
    body = build_model_run(request, listed)
    name = str(body["metadata"]["name"])
    for _ in range(3):  # a ModelRun deleted between our create and our read: try again
        try:
            # The stored object that the API server echoes is not needed: skip decoding it.
            await _once_more_if_dropped(
                lambda: kube.create(MODELRUNS, body, namespace, decode=False)
            )
            return Outcome(name, created=True)
        except AlreadyExists:
            pass
        except ApiUnreachable as exc:
            raise unavailable(exc) from exc
        except ApiError as exc:
            raise _translate(exc) from exc
        try:
            existing = await _once_more_if_dropped(lambda: kube.get(MODELRUNS, name, namespace))
        except NotFound:
            continue
        except ApiUnreachable as exc:
            raise unavailable(exc) from exc
        except ApiError as exc:
            raise _translate(exc) from exc
        spec = existing.get("spec") or {}
        diff = differences(spec, request)
        if diff:
            raise conflict(name, diff, spec)
        return Outcome(name, created=False)
    raise WebhookError(409, "conflict", f"ModelRun {name} is being deleted and re-created; retry")


async def _once_more_if_dropped(call: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Retry once, at once, when a pooled connection was dropped under us (not on a timeout).
    Safe for the create: if the first attempt did land, the retry meets AlreadyExists and the
    request is answered as a repeat."""
    try:
        return await call()
    except ApiUnreachable as exc:
        if isinstance(exc.__cause__, TimeoutError):
            raise
        return await call()


def _translate(exc: ApiError) -> Exception:
    """API errors a caller can act on become answers; the rest stay ApiErrors (500)."""
    if exc.status >= 500 or exc.status == 429:
        return unavailable(exc)
    if exc.status == 422:
        return WebhookError(
            422, "invalid_model_run", f"the API server refused the ModelRun: {exc.message[:500]}"
        )
    return exc
