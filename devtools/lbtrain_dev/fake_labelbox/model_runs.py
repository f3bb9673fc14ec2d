"""Resolvers for model runs, their pipeline status and config, and the account objects around them.

These are the fields lbtrain's operator and trainer touch: ``modelRun`` (``get_model_run``,
``get_config``), ``updateTrainingPipeline`` (``update_status``, sent to ``/_gql``),
``annotationGroups`` (``model_run_data_rows``: each row's ``dataSplit``),
``createAssignDataRowsToDataSplitTask`` and its status (``assign_data_rows_to_split``),
``deleteModelRunDataRows`` (``delete_model_run_data_rows``),
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
    if ctx.state.tunables.strict_metadata and isinstance(metadata, dict):
        bad = sorted(key for key, value in metadata.items() if not isinstance(value, str))
        if bad:  # worded as a GraphQL variable coercion error (the SDK types Dict[str, str])
            raise GqlError(
                BAD_USER_INPUT,
                f'Variable "$data" got invalid value at "data.metadata": values of '
                f"{', '.join(repr(key) for key in bad)} are not String",
            )
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


def _annotation_groups(ctx: Context, node: FieldNode) -> Any:
    """``model_run_data_rows()``: cursor pages of {id, labelId, modelRunId, dataSplit, dataRow}."""
    run = find_run(ctx, argument(node, "id", ctx.variables))
    after = argument(node, "after", ctx.variables)
    first = argument(node, "first", ctx.variables)
    start = int(after) if isinstance(after, str) and after.isdigit() else 0
    size = first if isinstance(first, int) and first > 0 else 100
    with ctx.state.lock:
        rows = run.rows[start : start + size]
        nodes: list[dict[str, Any]] = []
        for row in rows:
            data_row = row.get("data_row") or {}
            row_id = str(data_row.get("id"))
            labels = [
                label
                for obj in export.run_objects(row, run.id)
                for label in obj.get("labels") or []
                if isinstance(label, dict)
            ]
            nodes.append(
                {
                    "id": f"{run.id}:{row_id}",
                    "labelId": labels[0].get("id") if labels else None,
                    "modelRunId": run.id,
                    "dataSplit": run.splits.get(row_id, "UNASSIGNED"),
                    "dataRow": {
                        "id": row_id,
                        "globalKey": data_row.get("global_key"),
                        "rowData": data_row.get("row_data"),
                        "createdAt": run.created_at,
                        "updatedAt": run.created_at,
                        "customMetadata": [],
                        "metadataFields": [],
                    },
                }
            )
        more = start + size < len(run.rows)
    return {"nodes": nodes, "pageInfo": {"endCursor": str(start + size) if more else None}}


def _delete_data_rows(ctx: Context, node: FieldNode) -> Any:
    """``delete_model_run_data_rows``: the rows leave the run (export, imports, splits)."""
    run = find_run(ctx, argument(node, "modelRunId", ctx.variables))
    ids = argument(node, "dataRowIds", ctx.variables)
    if not isinstance(ids, list):
        raise GqlError(BAD_USER_INPUT, "dataRowIds must be a list of ids")
    with ctx.state.lock:
        run.rows = [r for r in run.rows if (r.get("data_row") or {}).get("id") not in ids]
        for row_id in ids:
            run.splits.pop(row_id, None)
    return True


def _metadata_ontology(ctx: Context, node: FieldNode) -> Any:
    """The organisation's data row metadata schema: the SDK reads it to build any ``DataRow``
    (``model_run_data_rows()`` included); the fake's organisation has no custom fields."""
    return []


def _assign_splits(ctx: Context, node: FieldNode) -> Any:
    """``assign_data_rows_to_split``: applied at once; the task is COMPLETE (or FAILED)."""
    run = find_run(ctx, argument(node, "id", ctx.variables))
    data = argument(node, "data", ctx.variables)
    assignments = data.get("assignments") if isinstance(data, dict) else None
    if not isinstance(assignments, list):
        raise GqlError(BAD_USER_INPUT, "data.assignments must be a list")
    error: str | None = None
    with ctx.state.lock:
        by_key = {
            str(row.get("data_row", {}).get("global_key")): str(row.get("data_row", {}).get("id"))
            for row in run.rows
        }
        for item in assignments:
            split = item.get("split") if isinstance(item, dict) else None
            if split not in export.SPLIT_NAMES.values():
                raise GqlError(
                    BAD_USER_INPUT, f'Value "{split}" does not exist in "DataSplit" enum.'
                )
            ids = list(item.get("dataRowIds") or []) + [
                by_key.get(str(key), f"global key {key!r}") for key in item.get("globalKeys") or []
            ]
            for row_id in ids:
                if row_id in run.splits:
                    run.splits[row_id] = str(split)
                else:
                    error = f"data row {row_id!r} is not in model run {run.id!r}"
        task_id = ctx.state.new_id("split-task")
        ctx.state.split_tasks[task_id] = error
    return task_id


def _assign_status(ctx: Context, node: FieldNode) -> Any:
    task_id = argument(node, "id", ctx.variables)
    with ctx.state.lock:
        if task_id not in ctx.state.split_tasks:
            raise GqlError(RESOURCE_NOT_FOUND, f"Resource 'Task' not found for id {task_id!r}")
        error = ctx.state.split_tasks[task_id]
    return {"status": "FAILED" if error else "COMPLETE", "errorMessage": error}


RESOLVERS: dict[str, Resolver] = {
    "annotationGroups": _annotation_groups,
    "customMetadataOntology": _metadata_ontology,
    "deleteModelRunDataRows": _delete_data_rows,
    "createAssignDataRowsToDataSplitTask": _assign_splits,
    "assignDataRowsToDataSplitTaskStatus": _assign_status,
    "modelRun": _model_run,
    "updateTrainingPipeline": _update_training_pipeline,
    "trainingPipeline": _training_pipeline,
    "updateModelRunConfig": _update_config,
    "resetModelRunConfig": _reset_config,
    "user": _user,
    "organization": _organization,
    "model": _model,
}
