"""Prediction imports (``ModelRun.add_predictions``): upload, per-row outcome, status files.

The SDK uploads NDJSON as a GraphQL multipart request (``createModelErrorAnalysisPredictionImport``
with ``filePayload``), then polls ``modelErrorAnalysisPredictionImport(where: {modelRunId, name})``
by *name* while the state is ``RUNNING`` and finally downloads ``statusFileUrl`` /
``errorFileUrl`` with a bare ``requests.get``. The fake records every row and checks what a real
import would reject, so that callers' error handling is exercised: each row needs ``dataRow``
with exactly one of ``id``/``globalKey`` naming a data row of the model run's export rows, a
``uuid`` that no other row of this import or an earlier accepted one holds, and content that fits
the run's ontology (:mod:`.ontology`: the feature exists, the answer has its question's shape).
Rejected rows are reported in ``errors``; the import still ends ``FINISHED``, as Labelbox does
for row errors.
Names are unique per model run (lookup is by name), so a reused name is a ``RESOURCE_CONFLICT``.
"""

from __future__ import annotations

import json
from typing import Any

from lbtrain_dev.fake_labelbox import ontology
from lbtrain_dev.fake_labelbox.document import FieldNode, argument
from lbtrain_dev.fake_labelbox.graphql import (
    BAD_USER_INPUT,
    RESOURCE_CONFLICT,
    RESOURCE_NOT_FOUND,
    Context,
    GqlError,
    Resolver,
    Upload,
    find_run,
    require,
)
from lbtrain_dev.fake_labelbox.state import (
    FakeState,
    ModelRunRecord,
    PredictionImport,
    iso_now,
)


def parse_ndjson(data: bytes) -> tuple[list[dict[str, Any]], str | None]:
    """The rows, or the reason the whole file is unreadable (the import then FAILS)."""
    rows: list[dict[str, Any]] = []
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        return [], f"file is not UTF-8: {exc}"
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            return rows, f"line {number} is not JSON: {exc}"
        if not isinstance(row, dict):
            return rows, f"line {number} is not a JSON object"
        rows.append(row)
    return rows, None


def _known(ref: Any, known: set[str]) -> bool:
    return isinstance(ref, str) and ref in known


def row_errors(row: dict[str, Any], ids: set[str], keys: set[str], run_id: str) -> list[Any]:
    """The data row reference's errors (the content is checked by :func:`ontology.row_errors`)."""
    errors: list[dict[str, str]] = []
    data_row = row.get("dataRow")
    ref_id = data_row.get("id") if isinstance(data_row, dict) else None
    ref_key = data_row.get("globalKey") if isinstance(data_row, dict) else None
    if (ref_id is None) == (ref_key is None):
        errors.append(
            {
                "name": "InvalidDataRowReference",
                "message": "dataRow must have exactly one of 'id' or 'globalKey'",
            }
        )
    elif not (_known(ref_id, ids) or _known(ref_key, keys)):
        what = f"id {ref_id!r}" if ref_id is not None else f"global key {ref_key!r}"
        errors.append(
            {
                "name": "DataRowNotFound",
                "message": f"Data row with {what} is not part of model run {run_id!r}",
            }
        )
    return errors


def _uuid_errors(row: dict[str, Any], seen: set[str]) -> list[dict[str, str]]:
    value = row.get("uuid")
    if not isinstance(value, str) or not value:
        return [{"name": "MissingUuid", "message": "every row needs a 'uuid' string"}]
    if value in seen:
        return [
            {
                "name": "DuplicateUuid",
                "message": f"uuid {value!r} is already used in this model run",
            }
        ]
    return []


def status_rows(run: ModelRunRecord, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids, keys = run.known_data_rows()
    seen = run.accepted_uuids()
    out: list[dict[str, Any]] = []
    for row in rows:
        errors = row_errors(row, ids, keys, run.id)
        errors += _uuid_errors(row, seen)
        errors += ontology.row_errors(row, run.ontology)
        if isinstance(row.get("uuid"), str):
            seen.add(row["uuid"])
        status: dict[str, Any] = {"uuid": row.get("uuid"), "dataRow": row.get("dataRow")}
        status["status"] = "FAILURE" if errors else "SUCCESS"
        if errors:
            status["errors"] = errors
        out.append(status)
    return out


def _payload(state: FakeState, node: FieldNode, ctx: Context) -> bytes:
    upload = argument(node, "file", ctx.variables)
    if isinstance(upload, Upload):
        return upload.data
    url = argument(node, "fileUrl", ctx.variables)
    media_prefix = f"{state.base_url}/media/"
    if isinstance(url, str) and url.startswith(media_prefix):
        with state.lock:
            media = state.media.get(url[len(media_prefix) :])
        if media is not None:
            return media[0]
    if url is not None:
        raise GqlError(BAD_USER_INPUT, f"the fake only imports from its own /media/ URLs: {url!r}")
    raise GqlError(BAD_USER_INPUT, "createModelErrorAnalysisPredictionImport needs a file")


def _import_json(state: FakeState, item: PredictionImport) -> dict[str, Any]:
    state_name = item.state
    if item.running_replies_left > 0:
        item.running_replies_left -= 1
    base = f"{state.base_url}/files/imports/{item.id}"
    return {
        "id": item.id,
        "name": item.name,
        "modelRunId": item.model_run_id,
        "state": state_name,
        "progress": "100%" if state_name != "RUNNING" else "0%",
        "inputFileUrl": f"{base}/input",
        "statusFileUrl": f"{base}/status",
        "errorFileUrl": f"{base}/errors",
        "createdAt": item.created_at,
        "updatedAt": item.created_at,
        "createdBy": state.user_id,
    }


def _create(ctx: Context, node: FieldNode) -> Any:
    run = find_run(ctx, argument(node, "modelRunId", ctx.variables))
    name = require(argument(node, "name", ctx.variables), "name")
    data = _payload(ctx.state, node, ctx)
    rows, failed = parse_ndjson(data)
    state = ctx.state
    with state.lock:
        if name in run.imports:
            raise GqlError(
                RESOURCE_CONFLICT, f"An import named {name!r} already exists for this model run"
            )
        item = PredictionImport(
            id=state.new_id("import"),
            name=name,
            model_run_id=run.id,
            rows=rows,
            input_ndjson=data,
            status_rows=[] if failed else status_rows(run, rows),
            created_at=iso_now(),
            failed_reason=failed,
            running_replies_left=state.tunables.import_running_replies,
        )
        run.imports[name] = item
        return _import_json(state, item)


def _lookup(ctx: Context, node: FieldNode) -> Any:
    run = find_run(ctx, argument(node, "modelRunId", ctx.variables))
    name = require(argument(node, "name", ctx.variables), "name")
    with ctx.state.lock:
        item = run.imports.get(name)
        if item is None:
            raise GqlError(RESOURCE_NOT_FOUND, f"No prediction import named {name!r}")
        return _import_json(ctx.state, item)


def read_file(state: FakeState, import_id: str, kind: str) -> bytes | None:
    """The NDJSON served at an import's ``input``/``status``/``errors`` URL."""
    with state.lock:
        found = [
            item
            for run in state.model_runs.values()
            for item in run.imports.values()
            if item.id == import_id
        ]
    if not found:
        return None
    item = found[0]
    if kind == "input":
        return item.input_ndjson
    rows = {"status": item.status_rows, "errors": item.error_rows}.get(kind)
    if rows is None:
        return None
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


RESOLVERS: dict[str, Resolver] = {
    "createModelErrorAnalysisPredictionImport": _create,
    "modelErrorAnalysisPredictionImport": _lookup,
}
