"""Prometheus metrics, in a registry of the app's own, served on a separate port."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The webhook's metrics. One instance per app, so tests can build many apps."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "lbtrain_webhook_requests",
            "HTTP requests answered, by route, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "lbtrain_webhook_request_duration_seconds",
            "Time from receiving a request to answering it, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.signature_failures = Counter(
            "lbtrain_webhook_signature_failures",
            "Requests refused for a missing, malformed or wrong X-Hub-Signature.",
            ["route", "reason"],
            registry=r,
        )
        self.model_runs_created = Counter(
            "lbtrain_webhook_model_runs_created",
            "ModelRuns created, by model type.",
            ["model_type"],
            registry=r,
        )
        self.model_run_duplicates = Counter(
            "lbtrain_webhook_model_run_duplicates",
            "Deliveries whose ModelRun already existed with the same body (answered 200).",
            registry=r,
        )
        self.templates = Gauge(
            "lbtrain_webhook_templates",
            "TrainingTemplates in the watch cache.",
            registry=r,
        )
        self.cache_ready = Gauge(
            "lbtrain_webhook_template_cache_ready",
            "1 when the template cache is synced and its watch connected.",
            registry=r,
        )

        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._created: dict[str, Any] = {}

    def count_created(self, model_type: str) -> None:
        """Count one ModelRun created (children cached; model types are bounded by the
        TrainingTemplates, since an unknown one is refused before anything is created)."""
        child = self._created.get(model_type)
        if child is None:
            child = self._created[model_type] = self.model_runs_created.labels(model_type)
        child.inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency (label children cached: the hot path)."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def make_metrics_app(metrics: Metrics) -> web.Application:
    """A tiny app serving `GET /metrics`, for the metrics port."""

    async def handle(_: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", handle)
    return app
