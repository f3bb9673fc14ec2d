"""The trainer's only contact with Labelbox: the SDK calls, kept in one thin module.

Everything else in the trainer works on plain dicts and files, so it is tested without a
server; this module is tested against the fake Labelbox. The SDK is synchronous and retries
5xx for about two minutes by itself (docs/labelbox.md §2.6), which is what a batch job wants, so
calls are made directly. Predictions and metrics are plain NDJSON dicts (no ``labelbox[data]``),
uploaded with ``add_predictions`` and checked through the import's ``errors``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lbtrain_trainer.errors import BadInputError, UploadError
from lbtrain_trainer.settings import Settings

log = logging.getLogger(__name__)

EXPORT_PARAMS: dict[str, Any] = {"predictions": False, "model_run_details": True}
# Rows per add_predictions call: the SDK allows 5000 annotations per data row per import, and
# smaller files keep each multipart upload well under request size limits.
UPLOAD_CHUNK_ROWS = 20_000
IMPORT_POLL_S = 2


def connect(settings: Settings) -> Any:
    """A ``labelbox.Client`` for the configured endpoints (experimental calls enabled)."""
    import labelbox

    settings.require_labelbox()
    return labelbox.Client(
        api_key=settings.api_key,
        endpoint=settings.endpoint,
        rest_endpoint=settings.rest_endpoint,
        enable_experimental=True,
    )


def get_model_run(settings: Settings, client: Any | None = None) -> Any:
    from lbox.exceptions import ResourceNotFoundError

    client = client or connect(settings)
    try:
        return client.get_model_run(settings.model_run_id)
    except ResourceNotFoundError as exc:
        raise BadInputError(
            f"model run {settings.model_run_id} does not exist in Labelbox"
        ) from exc


def get_config(model_run: Any) -> dict[str, Any]:
    config = model_run.get_config()
    return dict(config) if isinstance(config, Mapping) else {}


def update_config(model_run: Any, results: Mapping[str, Any], key: str) -> None:
    """Put ``results`` under ``key`` in the model run config, keeping the user's other keys."""
    current = get_config(model_run)
    model_run.update_config({**current, key: dict(results)})


def export_rows(model_run: Any) -> Iterator[dict[str, Any]]:
    """Stream the model run's export rows (data rows, labels, splits)."""
    from labelbox.schema.export_task import StreamType

    task = model_run.export(params=EXPORT_PARAMS)
    task.wait_till_done()
    if task.has_errors():
        errors = [o.json for o in task.get_buffered_stream(stream_type=StreamType.ERRORS)]
        raise RuntimeError(f"Labelbox export failed: {json.dumps(errors[:3])[:500]}")
    if not task.has_result():
        return
    for output in task.get_buffered_stream():
        yield output.json


def write_export(model_run: Any, path: Path) -> int:
    """Write the export to ``path`` as NDJSON (atomically); return the number of rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    count = 0
    with partial.open("w", encoding="utf-8") as out:
        for row in export_rows(model_run):
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
            count += 1
    partial.replace(path)
    return count


def _chunks(rows: Sequence[Mapping[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Chunks of at most ``size`` rows that never split one data row's rows."""
    chunk: list[dict[str, Any]] = []
    last_row: Any = None
    for row in rows:
        data_row = json.dumps(row.get("dataRow"), sort_keys=True)
        if len(chunk) >= size and data_row != last_row:
            yield chunk
            chunk = []
        chunk.append(dict(row))
        last_row = data_row
    if chunk:
        yield chunk


def upload_predictions(model_run: Any, rows: Sequence[Mapping[str, Any]], prefix: str) -> list[str]:
    """Upload prediction and metric rows; raise :class:`UploadError` if Labelbox rejects any."""
    names = []
    for chunk in _chunks(rows, UPLOAD_CHUNK_ROWS):
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"  # import names are unique per model run
        upload = model_run.add_predictions(name, chunk)
        upload.wait_till_done(sleep_time_seconds=IMPORT_POLL_S)
        errors = upload.errors
        state = getattr(getattr(upload, "state", None), "value", None)
        if errors or state == "FAILED":
            detail = json.dumps(errors[:3], default=str)[:600] if errors else "import FAILED"
            raise UploadError(f"Labelbox rejected predictions in import {name}: {detail}")
        log.info("uploaded %d prediction/metric rows as %s", len(chunk), name)
        names.append(name)
    return names
