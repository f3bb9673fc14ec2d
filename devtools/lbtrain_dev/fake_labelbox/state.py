"""What the fake Labelbox server knows and remembers, and which failures it has been told to fake.

Tests seed model runs and media, then assert on what the SDK sent (status updates, configs,
predictions, raw requests). The server's handlers run on one event loop while a test may call the
SDK from another thread and read these records at the same time, so every access goes through
one lock and readers get copies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from lbtrain_dev.fake_labelbox.ontology import Ontology

FailureMode = Literal["5xx", "timeout", "slow", "auth", "not_found", "conn_reset"]
FAILURE_MODES: frozenset[str] = frozenset(get_args(FailureMode))

PIPELINE_STATUSES: frozenset[str] = frozenset(
    {"EXPORTING_DATA", "PREPARING_DATA", "TRAINING_MODEL", "COMPLETE", "FAILED"}
)


def iso_now() -> str:
    """A timestamp in the one format the SDK parses without a warning (``...T..:..:..SSSZ``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class StatusUpdate:
    """One accepted ``updateTrainingPipeline`` call, in arrival order."""

    status: str
    metadata: dict[str, Any] | None
    error_message: str | None
    at: float


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as it arrived (before any injected failure was applied)."""

    method: str
    path: str
    sdk_method: str | None
    operation: str | None
    fields: tuple[str, ...]
    variables: dict[str, Any] | None
    failure: FailureMode | None
    at: float

    @property
    def field(self) -> str | None:
        """The first root field of the GraphQL document, e.g. ``updateTrainingPipeline``."""
        return self.fields[0] if self.fields else None


@dataclass
class FailureRule:
    """Fail the next ``remaining`` matching requests (``None``: until healed)."""

    mode: FailureMode
    remaining: int | None
    operations: frozenset[str] | None
    http_status: int

    def matches(self, keys: Collection[str]) -> bool:
        return self.operations is None or any(key in self.operations for key in keys)


@dataclass
class PredictionImport:
    """One ``createModelErrorAnalysisPredictionImport``: the rows and their per-row outcome."""

    id: str
    name: str
    model_run_id: str
    rows: list[dict[str, Any]]
    input_ndjson: bytes
    status_rows: list[dict[str, Any]]
    created_at: str
    failed_reason: str | None = None
    running_replies_left: int = 0

    @property
    def error_rows(self) -> list[dict[str, Any]]:
        return [row for row in self.status_rows if row.get("status") != "SUCCESS"]

    @property
    def state(self) -> str:
        if self.running_replies_left > 0:
            return "RUNNING"
        return "FAILED" if self.failed_reason else "FINISHED"


@dataclass(frozen=True)
class Chunk:
    """One export file: inclusive byte and line ranges of the whole NDJSON result."""

    start: int
    end: int
    line_start: int
    line_end: int


@dataclass
class ExportTask:
    """A streamable export of one model run, frozen when the task was created."""

    id: str
    name: str | None
    model_run_id: str
    result: bytes
    lines: int
    chunks: list[Chunk]
    created_at: str
    in_progress_replies_left: int = 0

    @property
    def status(self) -> str:
        return "IN_PROGRESS" if self.in_progress_replies_left > 0 else "COMPLETE"


@dataclass
class ModelRunRecord:
    id: str
    model_id: str
    name: str
    rows: list[dict[str, Any]]
    config: dict[str, Any] | None
    created_at: str
    updates: list[StatusUpdate] = field(default_factory=list)
    pipeline: dict[str, Any] = field(
        default_factory=lambda: {"status": None, "errorMessage": None, "metadata": None}
    )
    imports: dict[str, PredictionImport] = field(default_factory=dict)
    ontology: Ontology = field(default_factory=Ontology)
    # data row id -> TRAINING / VALIDATION / TEST / UNASSIGNED (ModelRunDataRow.data_split)
    splits: dict[str, str] = field(default_factory=dict)

    def accepted_uuids(self) -> set[str]:
        """The uuids of the rows earlier imports of this run accepted."""
        return {
            str(row["uuid"])
            for item in self.imports.values()
            for row in item.status_rows
            if row.get("status") == "SUCCESS" and isinstance(row.get("uuid"), str)
        }

    def known_data_rows(self) -> tuple[set[str], set[str]]:
        """The ids and global keys of the data rows in this run's export rows."""
        ids: set[str] = set()
        keys: set[str] = set()
        for row in self.rows:
            data_row = row.get("data_row") or {}
            if isinstance(data_row.get("id"), str):
                ids.add(data_row["id"])
            if isinstance(data_row.get("global_key"), str):
                keys.add(data_row["global_key"])
        return ids, keys


@dataclass
class Tunables:
    """Knobs tests may turn; the defaults keep the SDK fast (no polling sleeps)."""

    timeout_hang_s: float = 65.0
    export_chunk_bytes: int = 64 * 1024
    import_running_replies: int = 0
    export_in_progress_replies: int = 0
    max_error_message_len: int | None = 255
    # The export's run objects carry the split (with includeModelRunDetails only). False models
    # a Labelbox whose export carries none: the splits are then in model_run_data_rows() alone.
    export_splits: bool = True
    # Reject update_status metadata whose values are not all strings (BAD_USER_INPUT), as the
    # SDK's Dict[str, str] type suggests a real server may.
    strict_metadata: bool = False


class FakeState:
    """Everything the fake knows; all access holds ``lock``."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.lock = threading.RLock()
        self.base_url = ""
        self.tunables = Tunables()
        self.model_runs: dict[str, ModelRunRecord] = {}
        self.media: dict[str, tuple[bytes, str]] = {}
        self.export_tasks: dict[str, ExportTask] = {}
        self.split_tasks: dict[str, str | None] = {}  # task id -> error message (None: done)
        self.requests: list[RecordedRequest] = []
        self.failures: list[FailureRule] = []
        self.user_id = "fake-user-1"
        self.organization_id = "fake-org-1"
        self._next_id = 0

    def new_id(self, prefix: str) -> str:
        with self.lock:
            self._next_id += 1
            return f"{prefix}-{self._next_id}"

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def add_failure(
        self,
        mode: str,
        times: int | None,
        operations: Collection[str] | None,
        http_status: int,
    ) -> None:
        if mode not in FAILURE_MODES:
            raise ValueError(f"unknown failure mode {mode!r}; one of {sorted(FAILURE_MODES)}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None: until heal())")
        if isinstance(operations, str):
            operations = [operations]
        rule = FailureRule(
            mode=mode,  # type: ignore[arg-type]  # checked against FAILURE_MODES above
            remaining=times,
            operations=frozenset(operations) if operations is not None else None,
            http_status=http_status,
        )
        with self.lock:
            self.failures.append(rule)

    def take_failure(self, keys: Collection[str]) -> FailureRule | None:
        """The first rule matching one of ``keys``; it is used up when its count reaches 0."""
        with self.lock:
            for rule in self.failures:
                if not rule.matches(keys):
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self.failures.remove(rule)
                return rule
            return None

    def heal(self) -> None:
        with self.lock:
            self.failures.clear()

    def record_status(self, run: ModelRunRecord, data: dict[str, Any]) -> StatusUpdate:
        """Apply one status update the way Labelbox does: metadata merges, errors persist."""
        metadata = data.get("metadata")
        update = StatusUpdate(
            status=str(data["status"]),
            metadata=dict(metadata) if isinstance(metadata, dict) else None,
            error_message=data.get("errorMessage"),
            at=time.time(),
        )
        with self.lock:
            run.updates.append(update)
            run.pipeline["status"] = update.status
            if update.error_message:
                run.pipeline["errorMessage"] = update.error_message
            if update.metadata:
                run.pipeline["metadata"] = {**(run.pipeline["metadata"] or {}), **update.metadata}
        return update
