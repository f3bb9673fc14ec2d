"""Telling Labelbox: the real `labelbox` SDK, kept off the event loop and bounded in time.

The SDK is synchronous and retries 5xx for up to two minutes, so every call runs in a thread of
a pool of its own (a Labelbox outage must not starve kopf's executor). The calls of one model run
are made one at a time, in the order they were asked for, and a call whose caller was cancelled
(a pass cut short, a daemon stopped) still holds the run's turn until its thread is done:
otherwise it could land after a newer status and show Labelbox the statuses out of order. The
SDK bounds each call itself (a 120 s retry deadline, 60 s request timeouts).
`update_status` is experimental in the SDK (it needs `enable_experimental=True`) and
silently ignores an unknown model run, so the ModelRun object is
fetched once with `get_model_run`, which does raise, and kept for later updates.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lbtrain.resources.models import LabelboxStatus


class ReportError(Exception):
    """Labelbox did not take the update; the message is safe to log (no key, no token)."""


class ReportRejected(ReportError):
    """Labelbox answered that the call is invalid (a GraphQL validation error such as
    BAD_USER_INPUT), not that it could not take it: the same call would be rejected again."""


# GraphQL error codes of a call the server refused to apply as invalid (what the SDK's
# request_client raises for them: InvalidQueryError, or LabelboxError("Unknown error: ...")).
INVALID_CODES = ("BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED")
SDK_METHOD = "lbtrain-operator"  # what the operator's requests name as their caller


def rejected_as_invalid(exc: BaseException) -> bool:
    """Whether the SDK's exception says Labelbox refused the call's content (not a transport,
    server or authentication failure, which a later identical call may get through)."""
    from lbox import exceptions as lbx

    if isinstance(exc, lbx.InvalidQueryError | lbx.UnprocessableEntityError):
        return True
    if type(exc) is lbx.LabelboxError:  # exactly: its subclasses are timeouts, 5xx, auth...
        return any(code in str(exc) for code in INVALID_CODES)
    return False


class ModelRunNotFound(ReportError):
    """Labelbox does not know the model run (or the API key cannot see it). `update_status`
    alone would swallow this and report success, so the reporter checks the id first."""


class LabelboxReporter:
    """Sends model-run status updates through one shared SDK client."""

    def __init__(
        self, api_key: str | None, endpoint: str, rest_endpoint: str, max_workers: int = 16
    ) -> None:
        self._api_key = api_key
        self._endpoint = endpoint
        self._rest_endpoint = rest_endpoint
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="labelbox")
        self._client: Any = None
        self._runs: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._turns: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, int] = {}

    def _sdk_client(self) -> Any:
        with self._lock:
            if self._client is None:
                if not self._api_key:
                    raise ReportError("no Labelbox API key configured (--labelbox-api-key-file)")
                import labelbox  # lazily: half a second that pure-code tests skip

                client = labelbox.Client(
                    api_key=self._api_key,
                    endpoint=self._endpoint,
                    rest_endpoint=self._rest_endpoint,
                    enable_experimental=True,
                )
                # The telemetry header, named once: left unset, the SDK walks `inspect.stack()`
                # on every request to name the caller (~23 ms of CPU per status report).
                client.set_sdk_method(SDK_METHOD)
                self._client = client
            return self._client

    def _model_run(self, model_run_id: str) -> Any:
        run = self._runs.get(model_run_id)
        if run is None:
            from lbox.exceptions import ResourceNotFoundError

            try:
                run = self._sdk_client().get_model_run(model_run_id)
            except ResourceNotFoundError as exc:
                raise ModelRunNotFound(
                    f"Labelbox has no model run {model_run_id!r}, or the API key cannot see it"
                ) from exc
            self._runs[model_run_id] = run
        return run

    def _send(
        self,
        model_run_id: str,
        status: LabelboxStatus,
        metadata: dict[str, Any],
        error_message: str | None,
    ) -> None:
        run = self._model_run(model_run_id)
        run.update_status(status.value, metadata=metadata, error_message=error_message)

    async def update_status(
        self,
        model_run_id: str,
        status: LabelboxStatus,
        metadata: dict[str, Any],
        error_message: str | None = None,
    ) -> None:
        """Send one update or raise ReportError with a reason fit for status.lastError."""
        call = await self._take_turn(model_run_id, status, metadata, error_message)
        try:
            await asyncio.shield(call)  # cancelling the caller leaves the call running
        except ReportError:
            raise
        except Exception as exc:  # the SDK raises many unrelated types; all mean "not delivered"
            if rejected_as_invalid(exc):
                raise ReportRejected(_describe(exc)) from exc
            raise ReportError(_describe(exc)) from exc

    async def _take_turn(
        self,
        model_run_id: str,
        status: LabelboxStatus,
        metadata: dict[str, Any],
        error_message: str | None,
    ) -> asyncio.Future[None]:
        """Wait for the run's previous call to end, then start this one in the pool; the run's
        turn passes on when the thread is done, not when the caller stops waiting."""
        turn = self._turns.setdefault(model_run_id, asyncio.Lock())
        self._waiting[model_run_id] = self._waiting.get(model_run_id, 0) + 1
        try:
            await turn.acquire()
        except BaseException:
            self._leave(model_run_id, turn, release=False)
            raise
        loop = asyncio.get_running_loop()
        try:
            call = loop.run_in_executor(
                self._executor, self._send, model_run_id, status, metadata, error_message
            )
        except BaseException:
            self._leave(model_run_id, turn, release=True)
            raise

        def done(fut: asyncio.Future[None]) -> None:
            if not fut.cancelled():
                fut.exception()  # retrieved here too: a caller that was cancelled never will
            self._leave(model_run_id, turn, release=True)

        call.add_done_callback(done)
        return call

    def _leave(self, model_run_id: str, turn: asyncio.Lock, *, release: bool) -> None:
        if release:
            turn.release()
        left = self._waiting[model_run_id] - 1
        if left:
            self._waiting[model_run_id] = left
        else:  # nobody waits for this run: forget its lock
            del self._waiting[model_run_id]
            self._turns.pop(model_run_id, None)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _describe(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ").strip()
    # Never echo anything that looks like a credential back into a status or a log line.
    for marker in ("Bearer ", "api_key=", "Authorization"):
        if marker in text:
            text = text.split(marker)[0] + marker + "[redacted]"
    return f"{type(exc).__name__}: {text}"[:500]
