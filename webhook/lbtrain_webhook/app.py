"""The aiohttp application: thin handlers over the pure modules, state under typed AppKeys.

Background work lives in `cleanup_ctx`: the template watch (list + watch into memory), the secret
file poller, the TLS certificate poller (when serving TLS), and closing the Kubernetes client.
One middleware turns every failure into the JSON error shape, records metrics and writes one log
line per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from lbtrain.kube import KubeClient, load_config
from lbtrain.logs import get_logger, log_context
from lbtrain_webhook.errors import (
    WebhookError,
    error_response,
    from_exception,
    from_http_exception,
    unauthorized,
)
from lbtrain_webhook.inflight import InFlight
from lbtrain_webhook.metrics import Metrics
from lbtrain_webhook.modelruns import create_model_run
from lbtrain_webhook.payload import check_model_type, is_json_content_type, parse_model_run
from lbtrain_webhook.secret_store import SecretStore
from lbtrain_webhook.settings import Settings
from lbtrain_webhook.signature import SIGNATURE_HEADER, failure_reason, verify
from lbtrain_webhook.templates import TemplateCache
from lbtrain_webhook.tls import ReloadingTls

SETTINGS = web.AppKey("settings", Settings)
SECRETS = web.AppKey("secrets", SecretStore)
METRICS = web.AppKey("metrics", Metrics)
KUBE = web.AppKey("kube", KubeClient)
NAMESPACE = web.AppKey("namespace", str)
CACHE = web.AppKey("cache", TemplateCache)
# Only when the settings name a certificate and key (`tls` of the app answers None otherwise).
TLS = web.AppKey("tls", ReloadingTls)


INFLIGHT = web.AppKey("inflight", InFlight)


@dataclass
class RequestNote:
    """What a handler learnt about its request, for the one log line the middleware writes."""

    model_run_id: str | None = None
    model_type: str | None = None
    model_run: str | None = None
    outcome: str = "request"


NOTE = web.RequestKey("note", RequestNote)

ROUTE_MODELS = "/models"
ROUTE_MODEL_RUN = "/model_run"
# Successful answers on these routes log at DEBUG (Labelbox polls /models; probes poll the rest).
QUIET_ROUTES = frozenset({"/models", "/healthz", "/readyz"})

log = get_logger("lbtrain.webhook")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- request helpers -------------------------------------------------------------------------
async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refusing (413) more than `limit` bytes by header or by actual count."""
    too_large = WebhookError(
        413, "payload_too_large", f"the body is larger than the limit of {limit} bytes"
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    buf = bytearray()
    while True:
        chunk = await request.content.read(limit + 1 - len(buf))
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise too_large


def check_signature(request: web.Request, body: bytes, route: str) -> None:
    header = request.headers.get(SIGNATURE_HEADER)
    if verify(request.app[SECRETS].current(), body, header):
        return
    reason = failure_reason(header)
    request.app[METRICS].signature_failures.labels(route, reason).inc()
    raise unauthorized()


def not_synced() -> WebhookError:
    return WebhookError(
        503,
        "unavailable",
        "the TrainingTemplate cache is not synced yet (Kubernetes API unreachable?)",
    )


# --- handlers ----------------------------------------------------------------------------------
async def get_models(request: web.Request) -> web.Response:
    check_signature(request, b"", ROUTE_MODELS)  # Labelbox signs the empty body
    cache = request.app[CACHE]
    if not cache.synced:
        raise not_synced()
    return web.Response(body=cache.body(), content_type="application/json")


async def post_model_run(request: web.Request) -> web.Response:
    app = request.app
    body = await read_body(request, app[SETTINGS].max_body_bytes)
    check_signature(request, body, ROUTE_MODEL_RUN)  # over the exact bytes, before parsing
    if not is_json_content_type(request.headers.get("Content-Type")):
        raise WebhookError(
            415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)"
        )
    run = parse_model_run(body)
    note = request[NOTE]
    note.model_run_id, note.model_type = run.model_run_id, run.model_type
    with log_context(model_run_id=run.model_run_id):
        cache = app[CACHE]
        if not cache.synced:
            raise not_synced()
        check_model_type(run.model_type, cache.known_types())
        listed = cache.serving(run.model_type)
        outcome = await create_model_run(app[KUBE], app[NAMESPACE], run, listed)
    note.model_run = outcome.name
    if outcome.created:
        app[METRICS].count_created(run.model_type)
        note.outcome = "ModelRun created"
    else:
        app[METRICS].model_run_duplicates.inc()
        note.outcome = "repeated delivery; ModelRun already exists"
    answer = {"name": outcome.name, "namespace": app[NAMESPACE], "modelRunId": run.model_run_id}
    # orjson, as the log lines use: json_response's json.dumps showed in the POST's profile.
    return web.Response(
        body=orjson.dumps(answer),
        status=201 if outcome.created else 200,
        content_type="application/json",
    )


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def readiness_problems(app: web.Application) -> list[str]:
    cache, problems = app[CACHE], []
    if not cache.synced:
        problems.append("TrainingTemplate cache not synced")
    if not cache.connected:
        problems.append("Kubernetes API unreachable (the log says why)")
    if not app[SECRETS].current():
        problems.append("no webhook secret configured")
    return problems


async def readyz(request: web.Request) -> web.Response:
    problems = readiness_problems(request.app)
    if problems:
        return error_response(503, "not_ready", "; ".join(problems))
    return web.json_response({"status": "ready", "templates": len(request.app[CACHE])})


# --- middleware ----------------------------------------------------------------------------------
def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


async def _send(request: web.Request, response: web.StreamResponse) -> None:
    """Write the answer now, so that counting and logging it (below) are not part of the
    caller's wait; aiohttp then finds it sent. A caller that went away is aiohttp's to handle,
    as it would have been: writing again fails the same way."""
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON errors, metrics and one log line for every request, after its answer is sent; no
    trace ever leaves."""
    started = time.perf_counter()
    note = request[NOTE] = RequestNote()
    error: WebhookError | None = None
    inflight = request.app[INFLIGHT]
    inflight.enter()
    try:
        response = await handler(request)
    except WebhookError as exc:
        error, response = exc, from_exception(exc)
    except web.HTTPException as exc:
        response = from_http_exception(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error(
            "unexpected error",
            extra={
                "model_run_id": note.model_run_id,
                "error": f"{type(exc).__name__}: {exc}"[:500],
            },
        )
        response = error_response(500, "internal", "internal error; see the webhook's logs")
    finally:
        inflight.leave()
    elapsed = time.perf_counter() - started
    await _send(request, response)
    route = _route(request)
    request.app[METRICS].observe_request(route, request.method, response.status, elapsed)
    level = logging.DEBUG if route in QUIET_ROUTES and response.status < 400 else logging.INFO
    if log.isEnabledFor(level):
        fields: dict[str, Any] = {
            "method": request.method,
            "route": route,
            "status": response.status,
            "duration_ms": round(elapsed * 1000, 2),
            "remote": request.remote,
        }
        if note.model_run_id is not None:
            fields["model_run_id"] = note.model_run_id
            fields["model_type"] = note.model_type
        if note.model_run is not None:
            fields["model_run"] = note.model_run
        if error is not None:
            fields["error"], fields["detail"] = error.error, error.detail
        log.log(level, note.outcome, extra=fields)
    return response


# --- the app -------------------------------------------------------------------------------------
def make_app(
    settings: Settings,
    *,
    secrets: SecretStore | None = None,
    kube: KubeClient | None = None,
    metrics: Metrics | None = None,
) -> web.Application:
    """The webhook app. Without `kube`, it connects with `settings.kubeconfig` (or in-cluster)
    and closes that client on cleanup; a given client is left to its owner."""
    app = web.Application(middlewares=[observe], client_max_size=settings.max_body_bytes)
    owns_kube = kube is None
    if kube is None:
        config = load_config(settings.kubeconfig)
        kube = KubeClient(config, request_timeout=settings.api_timeout)
    namespace = settings.namespace or kube.config.namespace
    app[SETTINGS] = settings
    app[SECRETS] = secrets if secrets is not None else SecretStore.from_settings(settings)
    app[METRICS] = metrics = metrics or Metrics()
    app[INFLIGHT] = InFlight()
    app[KUBE] = kube
    app[NAMESPACE] = namespace
    if settings.tls_cert is not None and settings.tls_key is not None:
        app[TLS] = ReloadingTls(settings.tls_cert, settings.tls_key)

    def cache_changed(cache: TemplateCache) -> None:
        metrics.templates.set(len(cache))
        metrics.cache_ready.set(1 if cache.ready else 0)

    app[CACHE] = TemplateCache(
        kube,
        namespace,
        watch_timeout_seconds=settings.watch_timeout_seconds,
        on_change=cache_changed,
    )
    app.router.add_get(ROUTE_MODELS, get_models)
    app.router.add_post(ROUTE_MODEL_RUN, post_model_run)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.cleanup_ctx.append(_close_kube(owns_kube))
    app.cleanup_ctx.append(_template_watch)
    app.cleanup_ctx.append(_secret_reload)
    app.cleanup_ctx.append(_tls_reload)
    return app


def tls(app: web.Application) -> ReloadingTls | None:
    """The app's reloading TLS context, or None when it serves plain HTTP."""
    return app.get(TLS)


def _close_kube(owned: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        if owned:
            await app[KUBE].close()

    return ctx


async def _background(coro: Awaitable[None], name: str) -> AsyncIterator[None]:
    task = asyncio.ensure_future(coro)
    task.set_name(name)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _template_watch(app: web.Application) -> AsyncIterator[None]:
    async for _ in _background(app[CACHE].run(), "lbtrain-webhook-templates"):
        yield


async def _secret_reload(app: web.Application) -> AsyncIterator[None]:
    poll = app[SECRETS].poll(app[SETTINGS].secret_poll_interval)
    async for _ in _background(poll, "lbtrain-webhook-secrets"):
        yield


async def _tls_reload(app: web.Application) -> AsyncIterator[None]:
    reloading = tls(app)
    if reloading is None:
        yield
        return
    poll = reloading.poll(app[SETTINGS].secret_poll_interval)
    async for _ in _background(poll, "lbtrain-webhook-tls"):
        yield
