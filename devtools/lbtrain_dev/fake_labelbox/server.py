"""``FakeLabelbox``: a local Labelbox API the real ``labelbox`` SDK can be pointed at.

Tests seed it (model runs with export rows and config, media), let the code under test talk to it
through the unmodified SDK, then assert on what arrived (status updates in order, predictions,
configs, raw requests) and inject failures (5xx, timeouts, auth errors, not-found, connection
resets). The SDK is synchronous, so a test must not call it on the loop that serves the fake:
async tests use ``asyncio.to_thread``; sync tests use :meth:`FakeLabelbox.in_thread`, which runs
the server on its own loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import time
from collections.abc import Collection, Iterator
from types import TracebackType
from typing import Any

from aiohttp import web

from lbtrain_dev.fake_labelbox import export, timeline
from lbtrain_dev.fake_labelbox import ontology as ontology_
from lbtrain_dev.fake_labelbox.app import STOPPING, create_app
from lbtrain_dev.fake_labelbox.state import (
    FailureMode,
    FakeState,
    ModelRunRecord,
    RecordedRequest,
    StatusUpdate,
    iso_now,
)


class FakeLabelbox:
    """A fake Labelbox GraphQL server; see docs/fake-labelbox.md."""

    def __init__(self, api_key: str = "test-key") -> None:
        self._state = FakeState(api_key)
        self._app = create_app(self._state)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._runner is not None:
            raise RuntimeError("FakeLabelbox is already started")
        runner = web.AppRunner(self._app, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        with self._state.lock:
            self._state.base_url = f"http://{host}:{self._port}"

    async def stop(self) -> None:
        if self._runner is None:
            return
        self._app[STOPPING].set()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> FakeLabelbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @classmethod
    @contextlib.contextmanager
    def in_thread(
        cls, api_key: str = "test-key", host: str = "127.0.0.1", port: int = 0
    ) -> Iterator[FakeLabelbox]:
        """Serve from a private event loop in a daemon thread, for synchronous callers."""
        fake = cls(api_key=api_key)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-labelbox", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(fake.start(host, port), loop).result(timeout=30)
            yield fake
        finally:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()

    # --- addresses -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if not self._state.base_url:
            raise RuntimeError("FakeLabelbox is not started")
        return self._state.base_url

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/graphql"

    @property
    def rest_endpoint(self) -> str:
        return f"{self.base_url}/api/v1"

    @property
    def api_key(self) -> str:
        return self._state.api_key

    # --- seeding ---------------------------------------------------------------------------

    def add_model_run(
        self,
        model_run_id: str,
        *,
        model_id: str = "model-1",
        name: str = "run",
        rows: list[dict[str, Any]] | None = None,
        config: dict[str, Any] | None = None,
        ontology: list[dict[str, Any]] | None = None,
    ) -> None:
        """Create (or replace) a model run with its export rows and training config.

        A row's split is read from its run object (``split``, ``data_split`` or ``dataSplit``)
        and kept apart (see :mod:`.export`). ``ontology`` lists the run's features as
        ``{"name", "kind", "schemaId"?, "options": [{"name", "schemaId"?}]}`` (kinds: radio,
        checklist, text, rectangle, named-entity, polygon...); without it the features and
        answers the rows' labels use are the ontology.
        """
        seeded = copy.deepcopy(rows or [])
        splits = export.take_splits(seeded, model_run_id)
        record = ModelRunRecord(
            id=model_run_id,
            model_id=model_id,
            name=name,
            rows=seeded,
            config=copy.deepcopy(config),
            created_at=iso_now(),
            ontology=ontology_.from_json(ontology)
            if ontology is not None
            else ontology_.derive(seeded),
            splits=splits,
        )
        with self._state.lock:
            self._state.model_runs[model_run_id] = record

    def add_media(self, path: str, data: bytes, content_type: str) -> str:
        """Serve ``data`` at ``base_url/media/<path>`` (no auth, like a signed URL)."""
        path = path.lstrip("/")
        with self._state.lock:
            self._state.media[path] = (bytes(data), content_type)
        return f"{self.base_url}/media/{path}"

    # --- observations ----------------------------------------------------------------------

    def status_updates(self, model_run_id: str) -> list[StatusUpdate]:
        with self._state.lock:
            run = self._state.model_runs.get(model_run_id)
            return list(run.updates) if run else []

    def statuses(self, model_run_id: str) -> list[str]:
        return [update.status for update in self.status_updates(model_run_id)]

    def predictions(self, model_run_id: str) -> list[dict[str, Any]]:
        with self._state.lock:
            run = self._state.model_runs.get(model_run_id)
            if run is None:
                return []
            return copy.deepcopy([row for item in run.imports.values() for row in item.rows])

    def accepted_predictions(self, model_run_id: str) -> list[dict[str, Any]]:
        """The rows the run's imports accepted (status SUCCESS), in arrival order."""
        with self._state.lock:
            run = self._state.model_runs.get(model_run_id)
            if run is None:
                return []
            return copy.deepcopy(
                [
                    row
                    for item in run.imports.values()
                    for row, status in zip(item.rows, item.status_rows, strict=False)
                    if status.get("status") == "SUCCESS"
                ]
            )

    def splits(self, model_run_id: str) -> dict[str, str]:
        """{data row id: TRAINING|VALIDATION|TEST|UNASSIGNED}, as model_run_data_rows() says."""
        with self._state.lock:
            return dict(self._state.model_runs[model_run_id].splits)

    def imports(self, model_run_id: str) -> list[str]:
        with self._state.lock:
            run = self._state.model_runs.get(model_run_id)
            return list(run.imports) if run else []

    def import_errors(self, model_run_id: str, name: str) -> list[dict[str, Any]]:
        """The rows the fake rejected in one import (what ``MEAPredictionImport.errors`` gets)."""
        with self._state.lock:
            return copy.deepcopy(self._state.model_runs[model_run_id].imports[name].error_rows)

    def config(self, model_run_id: str) -> dict[str, Any]:
        """The run's current training config (``{}`` when it has none); KeyError if unknown."""
        with self._state.lock:
            return copy.deepcopy(self._state.model_runs[model_run_id].config or {})

    def timeline(self) -> str:
        """Everything received so far, one line per status update or import, oldest first."""
        return timeline.render(timeline.events(self._state))

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    async def wait_for_status(
        self, model_run_id: str, status: str, timeout: float = 30.0
    ) -> StatusUpdate:
        """Wait until ``status`` has been recorded for the run; returns that update."""
        deadline = time.monotonic() + timeout
        while True:
            for update in self.status_updates(model_run_id):
                if update.status == status:
                    return update
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"model run {model_run_id!r} never reached {status!r}; "
                    f"saw {self.statuses(model_run_id)}"
                )
            await asyncio.sleep(0.02)

    # --- failure injection and knobs -------------------------------------------------------

    def fail(
        self,
        mode: FailureMode,
        *,
        times: int | None = None,
        operations: Collection[str] | None = None,
        status: int = 503,
    ) -> None:
        """Fail the next ``times`` requests matching ``operations`` (None: all, until heal()).

        ``operations`` holds GraphQL operation names (``setPipelineStatusPyApi``), root field
        names (``updateTrainingPipeline``) or URL paths (``/_gql``). ``status`` is the HTTP
        status for mode ``"5xx"``.
        """
        if mode == "5xx" and not 500 <= status < 600:
            raise ValueError("status for mode '5xx' must be 5xx")
        self._state.add_failure(mode, times, operations, status)

    def heal(self) -> None:
        self._state.heal()

    @property
    def timeout_hang_s(self) -> float:
        """How long mode "timeout" holds a request before answering normally, and mode "slow"
        holds an answer after processing the request."""
        return self._state.tunables.timeout_hang_s

    @timeout_hang_s.setter
    def timeout_hang_s(self, value: float) -> None:
        self._state.tunables.timeout_hang_s = value

    @property
    def export_chunk_bytes(self) -> int:
        """Largest export chunk (a chunk holds at least one whole line)."""
        return self._state.tunables.export_chunk_bytes

    @export_chunk_bytes.setter
    def export_chunk_bytes(self, value: int) -> None:
        self._state.tunables.export_chunk_bytes = value

    @property
    def import_running_replies(self) -> int:
        """How many replies about a new import (its creation included) say RUNNING."""
        return self._state.tunables.import_running_replies

    @import_running_replies.setter
    def import_running_replies(self, value: int) -> None:
        self._state.tunables.import_running_replies = value

    @property
    def export_in_progress_replies(self) -> int:
        """How many task look-ups of a new export (its creation included) say IN_PROGRESS."""
        return self._state.tunables.export_in_progress_replies

    @export_in_progress_replies.setter
    def export_in_progress_replies(self, value: int) -> None:
        self._state.tunables.export_in_progress_replies = value

    @property
    def export_splits(self) -> bool:
        """The export carries each row's split (with ``includeModelRunDetails``); False: never."""
        return self._state.tunables.export_splits

    @export_splits.setter
    def export_splits(self, value: bool) -> None:
        self._state.tunables.export_splits = value

    @property
    def strict_metadata(self) -> bool:
        """``update_status`` metadata with a non-string value is rejected (BAD_USER_INPUT)."""
        return self._state.tunables.strict_metadata

    @strict_metadata.setter
    def strict_metadata(self, value: bool) -> None:
        self._state.tunables.strict_metadata = value

    @property
    def max_error_message_len(self) -> int | None:
        """Longer ``errorMessage`` values are rejected (BAD_USER_INPUT); None disables."""
        return self._state.tunables.max_error_message_len

    @max_error_message_len.setter
    def max_error_message_len(self, value: int | None) -> None:
        self._state.tunables.max_error_message_len = value
