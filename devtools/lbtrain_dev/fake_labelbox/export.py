"""Streamable model-run exports: the task, its metadata header and its chunk files.

``ModelRun.export()`` creates a task (``exportDataRowsInModelRun``), looks it up through
``user.createdTasks``, then reads ``task.exportMetadataHeader`` and pages through
``task.exportFileFromOffset``, downloading each chunk with a bare ``requests.get`` and asserting
that its byte length equals ``offsets.end - offsets.start + 1`` (inclusive ends). The fake freezes
the model run's rows as NDJSON when the task is created and cuts it into line-aligned chunks of at
most ``export_chunk_bytes`` (at least one line each), so a large export exercises the SDK's
paging and a multi-byte character never straddles two chunks.

The split of each row lives apart from the rows (``ModelRunRecord.splits``, what
``model_run_data_rows()`` reads and ``assign_data_rows_to_split`` writes). The export puts it on
the row's run object as ``"split": "training"|"validation"|"test"`` only when the request sets
``includeModelRunDetails`` (the SDK's ``model_run_details``; CHANGELOG 3.63.0) and the fake's
``export_splits`` is on; an unassigned row carries none. The real key is not documented, so a
test can turn ``export_splits`` off to model an export that carries no split at all.

An empty result has no RESULT stream (``exportMetadataHeader`` is ``null``), as for ERRORS:
``has_result()`` is then false and ``get_buffered_stream()`` raises ``ValueError``, which is also
what SDK 7.17.0 does for a zero-byte stream.
"""

from __future__ import annotations

import copy
import json
from typing import Any

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
from lbtrain_dev.fake_labelbox.state import Chunk, ExportTask, FakeState, ModelRunRecord, iso_now

TASK_TYPE = "export-data-rows"
SEEDED_SPLIT_KEYS = ("split", "data_split", "dataSplit")
SPLIT_NAMES = {
    "training": "TRAINING",
    "train": "TRAINING",
    "validation": "VALIDATION",
    "valid": "VALIDATION",
    "val": "VALIDATION",
    "test": "TEST",
    "testing": "TEST",
    "unassigned": "UNASSIGNED",
}


def run_objects(row: dict[str, Any], run_id: str) -> list[dict[str, Any]]:
    experiments = row.get("experiments")
    if not isinstance(experiments, dict):
        return []
    out = []
    for experiment in experiments.values():
        runs = experiment.get("runs") if isinstance(experiment, dict) else None
        if isinstance(runs, dict) and isinstance(runs.get(run_id), dict):
            out.append(runs[run_id])
    return out


def take_splits(rows: list[dict[str, Any]], run_id: str) -> dict[str, str]:
    """Move the seeded split keys off the rows' run objects into {data row id: DataSplit}."""
    splits: dict[str, str] = {}
    for row in rows:
        data_row = row.get("data_row") or {}
        row_id = data_row.get("id") if isinstance(data_row, dict) else None
        split = "UNASSIGNED"
        for run in run_objects(row, run_id):
            for key in SEEDED_SPLIT_KEYS:
                value = run.pop(key, None)
                if isinstance(value, dict):
                    value = value.get("name") or value.get("value")
                if isinstance(value, str):
                    split = SPLIT_NAMES.get(value.strip().lower(), split)
        if isinstance(row_id, str):
            splits[row_id] = split
    return splits


def exported_rows(run: ModelRunRecord, with_details: bool) -> list[dict[str, Any]]:
    """The run's rows as an export returns them: with the split only when asked for."""
    if not with_details:
        return run.rows
    out = []
    for row in run.rows:
        data_row = row.get("data_row") or {}
        split = run.splits.get(str(data_row.get("id")), "UNASSIGNED")
        if split == "UNASSIGNED":
            out.append(row)
            continue
        row = copy.deepcopy(row)
        for obj in run_objects(row, run.id):
            obj["split"] = split.lower()
        out.append(row)
    return out


def to_ndjson(rows: list[dict[str, Any]]) -> tuple[bytes, list[bytes]]:
    lines = [
        (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode() for row in rows
    ]
    return b"".join(lines), lines


def cut_chunks(lines: list[bytes], chunk_bytes: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    start = line_start = size = count = 0
    for index, line in enumerate(lines):
        if count and size + len(line) > chunk_bytes:
            chunks.append(Chunk(start, start + size - 1, line_start, index - 1))
            start, line_start, size, count = start + size, index, 0, 0
        size += len(line)
        count += 1
    if count:
        chunks.append(Chunk(start, start + size - 1, line_start, len(lines) - 1))
    return chunks


def _create(ctx: Context, node: FieldNode) -> Any:
    payload = argument(node, "input", ctx.variables)
    filters = payload.get("filters") if isinstance(payload, dict) else None
    run = find_run(ctx, filters.get("modelRunId") if isinstance(filters, dict) else None)
    params = payload.get("params") if isinstance(payload, dict) else None
    details = isinstance(params, dict) and params.get("includeModelRunDetails") is True
    state = ctx.state
    with state.lock:
        result, lines = to_ndjson(exported_rows(run, details and state.tunables.export_splits))
        task = ExportTask(
            id=state.new_id("export-task"),
            name=payload.get("taskName") if isinstance(payload, dict) else None,
            model_run_id=run.id,
            result=result,
            lines=len(lines),
            chunks=cut_chunks(lines, max(1, state.tunables.export_chunk_bytes)),
            created_at=iso_now(),
            in_progress_replies_left=state.tunables.export_in_progress_replies,
        )
        state.export_tasks[task.id] = task
    return {"taskId": task.id, "isStreamable": True}


def _task_json(state: FakeState, task: ExportTask) -> dict[str, Any]:
    status = task.status
    if task.in_progress_replies_left > 0:
        task.in_progress_replies_left -= 1
    return {
        "id": task.id,
        "name": task.name or f"Export v2: model run {task.model_run_id}",
        "status": status,
        "type": TASK_TYPE,
        "completionPercentage": 100.0 if status == "COMPLETE" else 0.0,
        "createdAt": task.created_at,
        "updatedAt": task.created_at,
        "metadata": None,
        "result": None,
        "errors": None,
        "createdBy": state.user_id,
    }


def created_tasks(ctx: Context, node: FieldNode) -> list[dict[str, Any]]:
    """``user.createdTasks(where: {id})``: how ``Task.get_task`` and ``refresh`` find a task."""
    wanted = argument(node, "id", ctx.variables)
    with ctx.state.lock:
        return [
            _task_json(ctx.state, task)
            for task in ctx.state.export_tasks.values()
            if wanted is None or task.id == wanted
        ]


def find_task(state: FakeState, task_id: Any) -> ExportTask:
    with state.lock:
        task = state.export_tasks.get(task_id) if isinstance(task_id, str) else None
    if task is None:
        raise GqlError(RESOURCE_NOT_FOUND, f"Resource 'Task' not found for id {task_id!r}")
    return task


def chunk_at(task: ExportTask, offset: int) -> Chunk | None:
    for chunk in task.chunks:
        if chunk.start <= offset <= chunk.end:
            return chunk
    return None


def chunk_url(state: FakeState, task: ExportTask, stream: str, offset: int) -> str:
    return f"{state.base_url}/files/export/{task.id}/{stream}/{offset}"


def read_chunk(state: FakeState, task_id: str, stream: str, offset: int) -> bytes | None:
    """The bytes served at a chunk URL: from ``offset`` to the end of its chunk."""
    with state.lock:
        task = state.export_tasks.get(task_id)
    if task is None or stream != "RESULT":
        return None
    chunk = chunk_at(task, offset)
    return None if chunk is None else task.result[offset : chunk.end + 1]


def _task(ctx: Context, node: FieldNode) -> Any:
    where = argument(node, "where", ctx.variables)
    task_id = where.get("id") if isinstance(where, dict) else argument(node, "id", ctx.variables)
    task = find_task(ctx.state, task_id)
    out: dict[str, Any] = {"id": task.id}
    header = node.child("exportMetadataHeader")
    if header is not None:
        stream = argument(header, "streamType", ctx.variables)
        out["exportMetadataHeader"] = (
            {"totalSize": len(task.result), "totalLines": task.lines}
            if stream == "RESULT" and task.result
            else None
        )
    file_node = node.child("exportFileFromOffset")
    if file_node is not None:
        stream = require(argument(file_node, "streamType", ctx.variables), "streamType")
        raw = argument(file_node, "offset", ctx.variables)
        try:
            offset = int(raw)
        except (TypeError, ValueError) as exc:
            raise GqlError(BAD_USER_INPUT, f"offset must be a UInt64, got {raw!r}") from exc
        chunk = chunk_at(task, offset) if stream == "RESULT" else None
        if chunk is None:
            out["exportFileFromOffset"] = None
        else:
            out["exportFileFromOffset"] = {
                "offsets": {"start": offset, "end": chunk.end},
                "lines": {"start": task.result.count(b"\n", 0, offset), "end": chunk.line_end},
                "file": chunk_url(ctx.state, task, stream, offset),
            }
    return out


RESOLVERS: dict[str, Resolver] = {
    "exportDataRowsInModelRun": _create,
    "task": _task,
}
