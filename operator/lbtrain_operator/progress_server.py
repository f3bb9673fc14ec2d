"""The operator's progress endpoint: `POST /progress` from rank 0 of a training pod.

The thin I/O edge of `livprogress`: it reads the bearer token and the report, asks the API
server who the token belongs to (a TokenReview bound to the progress audience), reads the pod,
its Job and its ModelRun, lets `livprogress` decide, and stores an accepted report as the
run's `status.progress`. Then it wakes the run's daemon, which sends it to Labelbox
(`outbox.queue_progress`). Any replica can take a report: the status is where it lands, so
the run's daemon finds it even when another replica received it.

A refused report is answered 400/401/403/409 and logged with its reason and the pod the token
names, never the token; `lbtrain_progress_reports_total{result}` counts each by its result.
The trainer never waits on this endpoint for long, and a slow or absent answer only costs
that report (the next one replaces it).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from lbtrain import contract
from lbtrain.kube import JOBS, MODELRUNS, PODS, TOKENREVIEWS, KubeClient, NotFound
from lbtrain.resources.status import replacing
from lbtrain_operator import livprogress as lp
from lbtrain_operator.metrics import Metrics

log = logging.getLogger("lbtrain.operator.progress")
RunKey = tuple[str, str]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class ProgressEndpoint:
    """`POST /progress`: authenticate, authorize, store, wake (see the module docstring)."""

    def __init__(
        self,
        kube: KubeClient,
        on_progress: Callable[[RunKey, dict[str, Any]], None],
        audience: str = contract.PROGRESS_AUDIENCE,
        clock: Callable[[], dt.datetime] = utcnow,
        metrics: Metrics | None = None,
    ) -> None:
        self.kube, self.on_progress, self.audience, self.clock = kube, on_progress, audience, clock
        self.metrics = metrics or Metrics()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=lp.BODY_MAX_BYTES)
        app.router.add_post(contract.PROGRESS_PATH, self.handle)
        return app

    async def _get(self, res: Any, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return await self.kube.get(res, name, namespace)
        except NotFound:
            return None

    async def review(self, token: str) -> Mapping[str, Any]:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self.audience]},
        }
        answer = await self.kube.create(TOKENREVIEWS, body)
        return answer.get("status") or {}

    async def decide(
        self, token: str | None, raw: Any
    ) -> tuple[lp.Refusal | None, lp.Identity | None, dict[str, Any] | None, Any]:
        """(refusal or None, who, the run, the parsed report)."""
        if token is None:
            return lp.Refusal(401, lp.MISSING_TOKEN, lp.MSG_MISSING_TOKEN), None, None, None
        who = lp.identity_of(await self.review(token), self.audience)
        if isinstance(who, lp.Refusal):
            return who, None, None, None
        report = lp.parse_report(raw, self.clock())
        if isinstance(report, lp.Refusal):
            return report, who, None, None
        pod = await self._get(PODS, who.pod_name, who.namespace)
        job_ref = lp.check_pod(who, pod)
        if isinstance(job_ref, lp.Refusal):
            return job_ref, who, None, report
        job = await self._get(JOBS, job_ref[0], who.namespace)
        run_ref = lp.check_job(who, job, job_ref[1])
        if isinstance(run_ref, lp.Refusal):
            return run_ref, who, None, report
        run = await self._get(MODELRUNS, run_ref[0], who.namespace)
        refused = lp.check_run(who, run, run_ref[1], report["modelRunId"])
        return refused, who, run, report

    async def handle(self, request: web.Request) -> web.Response:
        token = bearer(request.headers.get("Authorization"))
        try:
            raw = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            raw = None
        refused, who, run, report = await self.decide(token, raw)
        if refused is not None or who is None or run is None:
            refused = refused or lp.Refusal(403, lp.NOT_A_RUN_POD, "refused")
            self.metrics.progress_reports.labels(refused.reason).inc()
            log.warning(
                "progress report refused",
                extra={
                    "reason": refused.reason,
                    "detail": refused.message,
                    "pod": f"{who.namespace}/{who.pod_name}" if who else None,
                    "peer": request.remote,
                },
            )
            return web.json_response(
                {"reason": refused.reason, "message": refused.message}, status=refused.code
            )
        self.metrics.progress_reports.labels(lp.ACCEPTED).inc()
        name = run["metadata"]["name"]
        stored = (run.get("status") or {}).get("progress")
        if lp.newer(stored, report):
            progress = lp.status_progress(report, who.pod_name, self.clock())
            patch = {"status": {"progress": replacing(stored or {}, progress)}}
            await self.kube.patch(
                MODELRUNS, name, patch, who.namespace, subresource="status", decode=False
            )
            self.on_progress((who.namespace, name), progress)
        return web.json_response({"accepted": True}, status=202)


async def start(endpoint: ProgressEndpoint, host: str, port: int) -> web.AppRunner:
    """Serve the endpoint on host:port; the caller cleans the runner up."""
    runner = web.AppRunner(endpoint.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("progress endpoint listening", extra={"port": port})
    return runner
