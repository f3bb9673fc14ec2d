"""Resolvers for model runs, their pipeline status and config, and the account objects around them.

These are the fields lbtrain's operator and trainer touch: ``modelRun`` (``get_model_run``,
``get_config``), ``updateTrainingPipeline`` (``update_status``, sent to ``/_gql``),
``trainingPipeline`` (the status read-back Labelbox's own SDK tests use), the config mutations,
and ``user``/``organization``/``model``, which the SDK fetches on the way (export tasks are
looked up through ``user.createdTasks``). Semantics follow what Labelbox's SDK integration tests
assert: pipeline metadata merges across updates and an error message persists until replaced.
"""

from __future__ import annotations

from typing import Any

from lbtrain_dev.fake_labelbox import export
from lbtrain_dev.fake_labelbox.document import FieldNode, argument
from lbtrain_dev.fake_labelbox.graphql import (
    BAD_USER_INPUT,
    RESOURCE_NOT_FOUND,
    Context,
    GqlError,
    Resolver,
    find_run,
    require,
)
from lbtrain_dev.fake_labelbox.state import PIPELINE_STATUSES, iso_now

_STARTED_AT = iso_now()


def _model_run(ctx: Context, node: FieldNode) -> Any:
    run = find_run(ctx, argument(node, "id", ctx.variables))
    with ctx.state.lock:
        return {
            "id": run.id,
            "name": run.name,
            "createdAt": run.created_at,
            "updatedAt": run.created_at,
            "createdBy": ctx.state.user_id,
            "modelId": run.model_id,
            "modelAppId": None,
            "trainingMetadata": run.config,
        }


def _update_training_pipeline(ctx: Context, node: FieldNode) -> Any:
    run = find_run(ctx, argument(node, "id", ctx.variables))
    data = argument(node, "data", ctx.variables)
    if not isinstance(data, dict):
        raise GqlError(BAD_USER_INPUT, "data must be an UpdateTrainingPipelineInput object")
    status = data.get("status")
    if status not in PIPELINE_STATUSES:
        raise GqlError(
            BAD_USER_INPUT,
            f'Value "{status}" does not exist in "TrainingPipelineStatus" enum.',
        )
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise GqlError(BAD_USER_INPUT, "metadata must be a JSON object")
    message = data.get("errorMessage")
    limit = ctx.state.tunables.max_error_message_len
    if message is not None and (not isinstance(message, str) or (limit and len(message) > limit)):
        raise GqlError(BAD_USER_INPUT, f"errorMessage must be a string of at most {limit} chars")
    ctx.state.record_status(run, data)
    return {"status": status}


def _training_pipeline(ctx: Context, node: FieldNode) -> Any:
    run = find_run(ctx, argument(node, "id", ctx.variables))
    with ctx.state.lock:
        return dict(run.pipeline)


def _update_config(ctx: Context, node: FieldNode) -> Any:
    run = find_run(ctx, argument(node, "id", ctx.variables))
    data = argument(node, "data", ctx.variables)
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise GqlError(BAD_USER_INPUT, "data.config must be a JSON object")
    with ctx.state.lock:
        run.config = {**(run.config or {}), **config}
        return {"id": run.id, "trainingMetadata": run.config}


def _reset_config(ctx: Context, node: FieldNode) -> Any:
    run = find_run(ctx, argument(node, "id", ctx.variables))
    with ctx.state.lock:
        run.config = None
        return {"id": run.id, "trainingMetadata": None}


def _user(ctx: Context, node: FieldNode) -> Any:
    user: dict[str, Any] = {
        "id": ctx.state.user_id,
        "email": "fake-user@example.com",
        "name": "Fake User",
        "nickname": "fake",
        "picture": None,
        "isViewer": False,
        "isExternalUser": False,
        "createdAt": _STARTED_AT,
        "updatedAt": _STARTED_AT,
        "lastLoginAt": _STARTED_AT,
    }
    tasks = node.child("createdTasks")
    if tasks is not None:
        user["createdTasks"] = export.created_tasks(ctx, tasks)
    return user


def _organization(ctx: Context, node: FieldNode) -> Any:
    return {
        "id": ctx.state.organization_id,
        "name": "Fake Labelbox Organization",
        "createdAt": _STARTED_AT,
        "updatedAt": _STARTED_AT,
    }


def _model(ctx: Context, node: FieldNode) -> Any:
    model_id = require(argument(node, "id", ctx.variables), "model id")
    with ctx.state.lock:
        known = any(run.model_id == model_id for run in ctx.state.model_runs.values())
    if not known:
        raise GqlError(RESOURCE_NOT_FOUND, f"Resource 'Model' not found for id {model_id!r}")
    return {
        "id": model_id,
        "name": model_id,
        "ontologyId": None,
        "createdAt": _STARTED_AT,
        "updatedAt": _STARTED_AT,
        "createdBy": ctx.state.user_id,
    }


RESOLVERS: dict[str, Resolver] = {
    "modelRun": _model_run,
    "updateTrainingPipeline": _update_training_pipeline,
    "trainingPipeline": _training_pipeline,
    "updateModelRunConfig": _update_config,
    "resetModelRunConfig": _reset_config,
    "user": _user,
    "organization": _organization,
    "model": _model,
}
