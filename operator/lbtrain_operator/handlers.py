"""kopf registration: thin handlers that hand each ModelRun to `reconcile`.

Each ModelRun gets a daemon that runs reconcile passes until the run is finished and Labelbox
has everything. Pod and Job changes wake the run's daemon at once (through `informer`, whose
store the passes read instead of asking the API server); a resync timer covers anything a
watch missed. TrainingTemplates are held in a kopf index, so finding a run's template costs no
API call; each change to one re-marks the namespace's templates Listed or not (`listing`).
Deleting a run follows `cancellation`'s plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from lbtrain.kube import JOBS, MODELRUNS, ApiError, ApiUnreachable, NotFound
from lbtrain.resources.models import ModelRun
from lbtrain.resources.names import API_GROUP, API_VERSION
from lbtrain_operator import cancellation, delivery, events, jobspec, outbox
from lbtrain_operator.context import Context, utcnow
from lbtrain_operator.delivery import RunState
from lbtrain_operator.heartbeat import HEARTBEAT_LEASE
from lbtrain_operator.reconcile import reconcile, send_report, write_status
from lbtrain_operator.templatestatus import list_templates

log = logging.getLogger("lbtrain.operator")
RETRY_AFTER_API_ERROR_S = 5.0


def _templates_for(index: Any, namespace: str) -> list[dict[str, Any]]:
    """The namespace's TrainingTemplates as the index holds them; which one serves a run is
    `admission`'s decision, with the catalogue's rule (not the index's order)."""
    return list(index.get(namespace, []))


def register(registry: kopf.OperatorRegistry) -> None:
    """Register every handler on `registry` (the CLI's; tests may build their own)."""

    @kopf.index(API_GROUP, API_VERSION, "trainingtemplates", id="templates", registry=registry)
    def templates(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, dict[str, Any]]:
        return {
            namespace or "default": {
                "apiVersion": body.get("apiVersion"),
                "kind": body.get("kind"),
                "metadata": dict(body["metadata"]),
                "spec": dict(body["spec"]),
                "status": dict(body.get("status") or {}),
            }
        }

    @kopf.on.event(API_GROUP, API_VERSION, "trainingtemplates", registry=registry)
    async def template_changed(namespace: str | None, memo: Any, **kwargs: Any) -> None:
        ns = namespace or "default"
        await list_templates(memo.ctx, ns, _templates_for(kwargs["templates"], ns))

    @kopf.on.event(
        "coordination.k8s.io",
        "v1",
        "leases",
        field="metadata.name",
        value=HEARTBEAT_LEASE,
        registry=registry,
    )
    def heartbeat_seen(memo: Any, **_: Any) -> None:
        memo.heartbeat.seen()

    @kopf.on.probe(id="watches", registry=registry)
    def watches_alive(memo: Any, **_: Any) -> str:
        for informer in memo.informers:
            informer.check(memo.informer_stale_after_s)
        return str(memo.heartbeat.check())

    @kopf.daemon(
        API_GROUP,
        API_VERSION,
        "modelruns",
        cancellation_timeout=10.0,
        backoff=5.0,
        registry=registry,
    )
    async def follow(
        body: kopf.Body,
        name: str,
        namespace: str | None,
        memo: Any,
        stopped: kopf.DaemonStopped,
        **kwargs: Any,
    ) -> None:
        ctx: Context = memo.ctx
        namespace = namespace or "default"
        key = (namespace, name)
        wake = asyncio.Event()
        memo.wakers[key] = wake
        state = ctx.runs.setdefault(key, RunState.from_status(body.get("status")))
        lock = ctx.run_lock(key)

        try:
            while not stopped:
                wake.clear()
                try:
                    async with lock:
                        if stopped:  # the run is being deleted: the deletion handler goes on
                            return
                        delay = await reconcile(
                            ctx, body, state, _templates_for(kwargs["templates"], namespace)
                        )
                except (ApiError, ApiUnreachable) as exc:
                    log.warning(
                        "reconcile failed; retrying",
                        extra={
                            "modelrun": f"{namespace}/{name}",
                            "error": str(exc),
                            "model_run_id": body["spec"].get("modelRunId"),
                        },
                    )
                    delay = RETRY_AFTER_API_ERROR_S
                if delay is None:
                    log.info(
                        "run finished and reported",
                        extra={
                            "modelrun": f"{namespace}/{name}",
                            "model_run_id": body["spec"].get("modelRunId"),
                            "phase": state.status.phase,
                        },
                    )
                    ctx.forget(key)
                    return
                await _sleep_until(wake, stopped, delay)
        finally:
            memo.wakers.pop(key, None)

    @kopf.on.delete(API_GROUP, API_VERSION, "modelruns", registry=registry)
    async def cancel(
        body: kopf.Body, name: str, namespace: str | None, meta: kopf.Meta, memo: Any, **_: Any
    ) -> None:
        await cancel_run(memo.ctx, body, name, namespace or "default", meta)


async def _sleep_until(wake: asyncio.Event, stopped: kopf.DaemonStopped, delay: float) -> None:
    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())}
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def cancel_run(
    ctx: Context, body: kopf.Body, name: str, namespace: str, meta: kopf.Meta
) -> None:
    """A ModelRun is being deleted: stop its Job and make Labelbox show FAILED "cancelled".

    It waits for the pass its daemon may be in (kopf signals the daemon and calls this handler
    at once) and carries on from the daemon's status, which may be ahead of the stored one;
    without a daemon in this process, from the stored status, read afresh. Its calls are
    stored ahead, like a pass's (`delivery`), and each acknowledgement at once.

    Bounded: once `cancel_report_timeout_s` has passed since the deletion began, the finalizer
    lets go even if Labelbox never answered, so a Labelbox outage never blocks a deletion.
    """
    run = ModelRun.model_validate(dict(body))
    key = (namespace, name)
    async with ctx.run_lock(key):
        state = ctx.runs.get(key)
        if state is None:
            try:
                fresh = await ctx.kube.get(MODELRUNS, name, namespace)
            except NotFound:
                return
            state = RunState.from_status(fresh.get("status"))
            ctx.runs[key] = state
        await _report_cancellation(ctx, body, run, state, meta)
    ctx.forget(key)


async def _report_cancellation(
    ctx: Context, body: kopf.Body, run: ModelRun, state: RunState, meta: kopf.Meta
) -> None:
    name = run.metadata.name
    namespace = run.metadata.namespace or "default"
    planned = cancellation.plan(state.status)
    if planned.delete_job:
        with contextlib.suppress(NotFound):
            job = state.status.job_name or jobspec.job_name(name)  # the current attempt's
            await ctx.kube.delete(JOBS, job, namespace, propagation="Background")
    state.status = planned.status
    errors: list[Exception] = []

    async def store(s: RunState) -> None:
        await write_status(ctx.kube, name, namespace, s)

    async def send(box: outbox.Outbox, report: outbox.Report) -> outbox.Outbox:
        box, error = await send_report(ctx, run.spec.model_run_id, box, report)
        if error is not None:
            errors.append(error)
        return box

    await delivery.deliver(state, store, send, utcnow, ack_store_delay_s=0.0)
    then = cancellation.after_delivery(
        drained=outbox.drained(state.status.labelbox),
        error=str(errors[-1]) if errors else None,
        deletion_started=meta.get("deletionTimestamp"),
        now=utcnow(),
        timeout_s=ctx.settings.cancel_report_timeout_s,
    )
    if isinstance(then, cancellation.GiveUp):
        log.error(
            "gave up telling Labelbox about the cancellation",
            extra={"model_run_id": run.spec.model_run_id, "error": str(errors[-1])},
        )
        await events.post(
            ctx.kube, events.event_body(body, "Warning", then.reason, then.message, utcnow())
        )
        return
    if isinstance(then, cancellation.RetryIn):
        raise kopf.TemporaryError(f"Labelbox: {then.error}", delay=then.seconds) from errors[-1]
    log.info(
        "cancelled",
        extra={"model_run_id": run.spec.model_run_id, "modelrun": f"{namespace}/{name}"},
    )
