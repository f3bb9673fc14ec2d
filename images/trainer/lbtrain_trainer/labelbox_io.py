"""The trainer's only contact with Labelbox: the SDK calls, kept in one thin module.

Everything else in the trainer works on plain dicts and files, so it is tested without a
server; this module is tested against the fake Labelbox. The SDK is synchronous and retries
5xx for about two minutes by itself (docs/labelbox.md §2.6), which is what a batch job wants, so
calls are made directly. Predictions and metrics are plain NDJSON dicts (no ``labelbox[data]``),
uploaded with ``add_predictions`` and checked through the import's ``errors``: a rejected row is
logged and counted, not a reason to retrain (see :func:`upload_predictions`).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbtrain_trainer.errors import BadInputError, UploadError
from lbtrain_trainer.settings import Settings
from lbtrain_trainer.splits import DATA_SPLIT, Split, parse_split

log = logging.getLogger(__name__)

EXPORT_PARAMS: dict[str, Any] = {"predictions": False, "model_run_details": True}
# Rows per add_predictions call: the SDK allows 5000 annotations per data row per import, and
# smaller files keep each multipart upload well under request size limits.
UPLOAD_CHUNK_ROWS = 20_000
IMPORT_POLL_S = 2
IMPORT_ATTEMPTS = 3  # names tried per chunk when Labelbox fails an import as a whole
FIRST_ERRORS = 3  # rejected rows quoted in the log and the run's metadata
UUID_NAMESPACE = uuid.UUID("9a4f3c1e-2b7d-4e55-8c0a-6d1f2e3b4a57")
SPLIT_ASSIGN_ROWS = 5_000  # data rows per assign_data_rows_to_split call
SDK_METHOD = "lbtrain-trainer"  # what the trainer's requests name as their caller (connect)


def connect(settings: Settings) -> Any:
    """A ``labelbox.Client`` for the configured endpoints (experimental calls enabled)."""
    import labelbox

    settings.require_labelbox()
    client = labelbox.Client(
        api_key=settings.api_key,
        endpoint=settings.endpoint,
        rest_endpoint=settings.rest_endpoint,
        enable_experimental=True,
    )
    # Labelbox's telemetry header (X-SDK-Method). Left unset, the SDK finds the calling method
    # by walking `inspect.stack()` on every request: ~23 ms of CPU each, 0.76 s of a 6,000-row
    # export stage (33 calls, one per export chunk) and more the longer the export.
    client.set_sdk_method(SDK_METHOD)
    return client


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
    # The SDK's task lookup is a paginated query, which names itself and then clears the name
    # `connect` set: set it again before the polls and the (many) chunk reads.
    model_run.client.set_sdk_method(SDK_METHOD)
    task.wait_till_done()
    if task.has_errors():
        errors = [o.json for o in task.get_buffered_stream(stream_type=StreamType.ERRORS)]
        raise RuntimeError(f"Labelbox export failed: {json.dumps(errors[:3])[:500]}")
    if not task.has_result():
        return
    for output in task.get_buffered_stream():
        yield output.json


def stream_export(model_run: Any, path: Path) -> Iterator[dict[str, Any]]:
    """Yield the export's rows while writing them to ``path`` as NDJSON. The file appears
    (atomically, by a rename) only once the stream is exhausted; a stream abandoned or broken
    halfway leaves only ``<path>.partial``, which the next attempt overwrites."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as out:
        for row in export_rows(model_run):
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
            yield row
    partial.replace(path)


def write_export(model_run: Any, path: Path) -> int:
    """Write the export to ``path`` as NDJSON (atomically); return the number of rows."""
    return sum(1 for _ in stream_export(model_run, path))


def data_row_splits(model_run: Any) -> dict[str, Split | None]:
    """{data row id: split} from ``model_run.model_run_data_rows()`` (None: UNASSIGNED)."""
    out: dict[str, Split | None] = {}
    for item in model_run.model_run_data_rows():
        value = getattr(item.data_split, "value", item.data_split)
        out[str(item.data_row().uid)] = parse_split(value)
    return out


def assign_splits(model_run: Any, hashed: Mapping[Split, Sequence[str]]) -> int:
    """Write hash-assigned splits back to the model run; return how many rows were written."""
    written = 0
    for split, row_ids in hashed.items():
        for start in range(0, len(row_ids), SPLIT_ASSIGN_ROWS):
            batch = list(row_ids[start : start + SPLIT_ASSIGN_ROWS])
            model_run.assign_data_rows_to_split(data_row_ids=batch, split=DATA_SPLIT[split])
            written += len(batch)
    return written


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


@dataclass
class UploadResult:
    """What Labelbox made of one upload: the imports, the rows sent, and the rejected ones."""

    imports: list[str] = field(default_factory=list)
    rows: int = 0
    rejected: int = 0
    first_errors: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return self.rows - self.rejected

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "first_errors": self.first_errors,
        }


def describe_error(status: Mapping[str, Any]) -> str:
    """One rejected row as a short line: ``uuid (data row): name: message; ...``."""
    data_row = status.get("dataRow") or {}
    where = data_row.get("id") or data_row.get("globalKey") if isinstance(data_row, Mapping) else ""
    errors = status.get("errors") or []
    what = "; ".join(
        f"{e.get('name', '?')}: {e.get('message', '')}" for e in errors if isinstance(e, Mapping)
    )
    return f"{status.get('uuid')} ({where}): {what}"[:300]


def stable_uuids(rows: Sequence[Mapping[str, Any]], upload_id: str) -> list[dict[str, Any]]:
    """The rows with uuids scoped to ``upload_id`` (one model's predictions): a retry of the
    same upload sends the same uuids, a later model (more epochs) new ones, so it never
    collides with the uuids Labelbox already holds."""
    out = []
    for row in rows:
        copy = dict(row)
        if isinstance(copy.get("uuid"), str):
            copy["uuid"] = str(uuid.uuid5(UUID_NAMESPACE, f"{upload_id}/{copy['uuid']}"))
        out.append(copy)
    return out


def _existing_import(model_run: Any, name: str) -> Any | None:
    """The import an earlier attempt created under ``name``, if Labelbox has it."""
    from labelbox.schema.annotation_import import MEAPredictionImport
    from lbox.exceptions import ResourceNotFoundError

    try:
        return MEAPredictionImport.from_name(model_run.client, model_run.uid, name)
    except ResourceNotFoundError:
        return None


def _failed(upload: Any) -> bool:
    return getattr(getattr(upload, "state", None), "value", None) == "FAILED"


def _import_chunk(model_run: Any, chunk: list[dict[str, Any]], base: str) -> tuple[str, list[Any]]:
    """Import one chunk under ``base`` (or, after imports Labelbox failed as a whole, under
    ``base-r1``, ``base-r2``): an import an earlier attempt made under that name is read, not
    made again. Answers the name and the rows Labelbox refused."""
    for attempt in range(IMPORT_ATTEMPTS):
        name = base if attempt == 0 else f"{base}-r{attempt}"
        upload = _existing_import(model_run, name)
        if upload is not None:
            log.info("import %s was made by an earlier attempt: not uploading it again", name)
        else:
            upload = model_run.add_predictions(name, chunk)
        upload.wait_till_done(sleep_time_seconds=IMPORT_POLL_S)
        if _failed(upload):  # the SDK's .errors would raise "Import failed."
            log.warning("Labelbox failed import %s as a whole", name)
            continue
        errors: list[Any] = upload.errors
        return name, errors
    raise UploadError(f"Labelbox failed import {base} as a whole {IMPORT_ATTEMPTS} times")


def upload_predictions(
    model_run: Any,
    rows: Sequence[Mapping[str, Any]],
    upload_id: str,
    min_accepted_fraction: float = 0.0,
) -> UploadResult:
    """Upload prediction and metric rows, tolerating rows Labelbox rejects.

    Import names derive from ``upload_id`` and the chunk's position, so a retry after a crash
    finds each import an earlier attempt made (``MEAPredictionImport.from_name``) and reads its
    outcome instead of uploading the same predictions again. Rejected rows are logged (count
    and the first few) and returned; the upload fails (:class:`BadInputError`: Labelbox will
    reject the same rows again) only when it accepts no row, or less than
    ``min_accepted_fraction`` of them.
    """
    result = UploadResult()
    for index, chunk in enumerate(_chunks(stable_uuids(rows, upload_id), UPLOAD_CHUNK_ROWS)):
        name, errors = _import_chunk(model_run, chunk, f"lbtrain-{upload_id}-{index:03d}")
        result.imports.append(name)
        result.rows += len(chunk)
        result.rejected += len(errors)
        for status in errors[: max(0, FIRST_ERRORS - len(result.first_errors))]:
            result.first_errors.append(describe_error(status))
        log.info("import %s: %d rows, %d rejected", name, len(chunk), len(errors))
    if result.rejected:
        log.warning(
            "Labelbox rejected %d of %d prediction/metric rows; first: %s",
            result.rejected,
            result.rows,
            " | ".join(result.first_errors),
        )
    if result.rows and (
        result.accepted == 0 or result.accepted < min_accepted_fraction * result.rows
    ):
        raise BadInputError(
            f"Labelbox accepted {result.accepted} of {result.rows} prediction/metric rows "
            f"(min_accepted_fraction {min_accepted_fraction}); first errors: "
            + " | ".join(result.first_errors)
        )
    return result
