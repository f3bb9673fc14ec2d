"""The fake's aiohttp application: routes, request recording, auth and failure injection.

Routes mirror the hosts the SDK contacts (docs/labelbox.md section 2.3): ``POST /graphql`` and
``POST /_gql`` (experimental calls such as ``update_status``) run the same GraphQL executor; the
"signed storage" URLs the SDK downloads without credentials (export chunks, import status
files, media) live under ``/files/`` and ``/media/``. Every request is recorded *before* an
injected failure is applied, so a test can count the SDK's retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from aiohttp import BodyPartReader, web

from lbtrain_dev.fake_labelbox import export, imports, model_runs, timeline
from lbtrain_dev.fake_labelbox.graphql import (
    AUTHENTICATION_ERROR,
    GRAPHQL_PARSE_FAILED,
    RESOURCE_NOT_FOUND,
    Context,
    GqlError,
    Resolver,
    Upload,
    error_body,
    execute,
    parse_operation,
)
from lbtrain_dev.fake_labelbox.state import FakeState, RecordedRequest

log = logging.getLogger(__name__)

STATE = web.AppKey("fake_labelbox_state", FakeState)
STOPPING = web.AppKey("fake_labelbox_stopping", asyncio.Event)
SLOW = web.RequestKey("fake_labelbox_slow", bool)  # answer late (mode "slow")
RESOLVERS: dict[str, Resolver] = {
    **model_runs.RESOLVERS,
    **export.RESOLVERS,
    **imports.RESOLVERS,
}
MAX_BODY_BYTES = 512 * 1024 * 1024


class _Reset(Exception):
    """The injected failure closed the connection; no response is written."""


async def _read_multipart(request: web.Request) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """GraphQL multipart request spec: ``operations``, ``map``, then one part per file."""
    fields: dict[str, str] = {}
    files: dict[str, Upload] = {}
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        data = await part.read(decode=False)
        if part.filename is not None:
            content_type = part.headers.get("Content-Type", "application/octet-stream")
            files[part.name] = Upload(part.filename, content_type, bytes(data))
        else:
            fields[part.name] = bytes(data).decode()
    operations = json.loads(fields.get("operations", "{}"))
    recorded = dict(operations.get("variables") or {})
    variables = dict(recorded)
    for part_name, paths in json.loads(fields.get("map", "{}")).items():
        for path in paths:
            name = str(path).removeprefix("variables.")
            if part_name in files and "." not in name:
                variables[name] = files[part_name]
    return operations.get("query"), recorded, variables


async def _read_graphql(request: web.Request) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    if request.content_type.startswith("multipart/"):
        return await _read_multipart(request)
    body = json.loads(await request.read())
    if not isinstance(body, dict):
        raise ValueError("body is not a JSON object")
    variables = body.get("variables") or {}
    return body.get("query"), variables, variables


async def _inject(
    request: web.Request, keys: set[str], recorded: dict[str, Any]
) -> web.Response | None:
    """Record the request, then apply the first matching failure rule (if any)."""
    state = request.app[STATE]
    rule = state.take_failure(keys | {request.path})
    state.record(
        RecordedRequest(
            method=request.method,
            path=request.path,
            sdk_method=request.headers.get("X-SDK-Method"),
            operation=recorded.get("operation"),
            fields=tuple(recorded.get("fields", ())),
            variables=recorded.get("variables"),
            failure=rule.mode if rule else None,
            at=time.time(),
        )
    )
    if rule is None:
        return None
    if rule.mode == "slow":  # applied as usual; the answer waits (`_answer_late`)
        request[SLOW] = True
        return None
    if rule.mode == "5xx":
        reason = {502: "Bad Gateway", 503: "Service Unavailable"}.get(rule.http_status, "Error")
        return web.Response(status=rule.http_status, text=f"{rule.http_status} {reason}")
    if rule.mode == "auth":
        return web.json_response(error_body(AUTHENTICATION_ERROR, "Invalid API key"), status=401)
    if rule.mode == "not_found":
        return web.json_response(error_body(RESOURCE_NOT_FOUND, "Resource not found (injected)"))
    if rule.mode == "timeout":
        stopping = request.app[STOPPING]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), state.tunables.timeout_hang_s)
        gone = request.transport is None or request.transport.is_closing()
        if not stopping.is_set() and not gone:
            return None  # a slow answer: the client is still waiting for it
    if request.transport is not None:  # "conn_reset", or "timeout" cut short by stop()
        request.transport.abort()
    raise _Reset


async def _graphql(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    recorded: dict[str, Any] = {}
    try:
        query, recorded_variables, variables = await _read_graphql(request)
        recorded["variables"] = recorded_variables
        operation = parse_operation(query)
        recorded.update(operation=operation.name, fields=[node.name for node in operation.fields])
    except GqlError as exc:
        return await _inject(request, set(), recorded) or web.json_response(
            error_body(exc.code, exc.message), status=exc.http_status
        )
    except ValueError as exc:  # json.JSONDecodeError included
        return await _inject(request, set(), recorded) or web.json_response(
            error_body(GRAPHQL_PARSE_FAILED, f"malformed request body: {exc}"), status=400
        )
    keys = {key for key in [operation.name, *recorded["fields"]] if key}
    if (failed := await _inject(request, keys, recorded)) is not None:
        return failed
    if request.headers.get("Authorization") != f"Bearer {state.api_key}":
        return web.json_response(error_body(AUTHENTICATION_ERROR, "Invalid API key"), status=401)
    ctx = Context(state=state, variables=variables, experimental=request.path.endswith("/_gql"))
    status, body = execute(RESOLVERS, ctx, operation)
    await _answer_late(request)
    return web.json_response(body, status=status)


async def _answer_late(request: web.Request) -> None:
    """Mode "slow": the request took effect; its answer comes `timeout_hang_s` later (a client
    that gives up or dies meanwhile does not know that Labelbox has it)."""
    if request.get(SLOW):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                request.app[STOPPING].wait(), request.app[STATE].tunables.timeout_hang_s
            )


async def _media(request: web.Request) -> web.StreamResponse:
    if (failed := await _inject(request, set(), {})) is not None:
        return failed
    with request.app[STATE].lock:
        media = request.app[STATE].media.get(request.match_info["path"])
    if media is None:
        raise web.HTTPNotFound()
    return web.Response(body=media[0], content_type=media[1])


async def _export_chunk(request: web.Request) -> web.StreamResponse:
    if (failed := await _inject(request, set(), {})) is not None:
        return failed
    info = request.match_info
    try:
        offset = int(info["offset"])
    except ValueError as exc:
        raise web.HTTPNotFound() from exc
    data = export.read_chunk(request.app[STATE], info["task"], info["stream"], offset)
    if data is None:
        raise web.HTTPNotFound()
    return web.Response(body=data, content_type="application/x-ndjson")


async def _import_file(request: web.Request) -> web.StreamResponse:
    if (failed := await _inject(request, set(), {})) is not None:
        return failed
    info = request.match_info
    data = imports.read_file(request.app[STATE], info["import_id"], info["kind"])
    if data is None:
        raise web.HTTPNotFound()
    return web.Response(body=data, content_type="application/x-ndjson")


@web.middleware
async def _swallow_resets(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except _Reset:
        # The connection is gone; aiohttp needs *a* response object but cannot send it.
        return web.Response(status=499)
    return response


async def _timeline(request: web.Request) -> web.Response:
    """What the fake received, as text, for a person (no auth: it holds no secrets)."""
    return web.Response(text=timeline.render(timeline.events(request.app[STATE])))


def create_app(state: FakeState) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_swallow_resets])
    app[STATE] = state
    app[STOPPING] = asyncio.Event()
    app.router.add_post("/graphql", _graphql)
    app.router.add_post("/_gql", _graphql)
    app.router.add_get("/media/{path:.+}", _media)
    app.router.add_get("/timeline", _timeline)
    app.router.add_get("/files/export/{task}/{stream}/{offset}", _export_chunk)
    app.router.add_get("/files/imports/{import_id}/{kind}", _import_file)
    return app
