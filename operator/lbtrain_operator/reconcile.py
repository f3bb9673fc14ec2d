"""One reconcile pass over one ModelRun: ensure its Job, observe it, queue and send Labelbox
statuses. Decisions come from the pure modules; this module only reads, writes and sends.

Only the run's own daemon (and, after it stopped, the deletion handler) writes the status, so the
pass keeps the status it last wrote as the truth instead of a watch event that may lag behind:
that is what stops a quick second pass from queueing the same Labelbox status twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lbtrain.kube import (
    JOBS,
    MODELRUNS,
    AlreadyExists,
    ApiError,
    ApiUnreachable,
    Conflict,
    KubeClient,
    NotFound,
)
from lbtrain.resources.models import ModelRun, Phase, TrainingTemplate
from lbtrain_operator import events, jobspec, outbox, progress
from lbtrain_operator import reasons as r
from lbtrain_operator.burst import BurstGate
from lbtrain_operator.informer import RunObjects
from lbtrain_operator.labelbox import LabelboxReporter, ModelRunNotFound, ReportError
from lbtrain_operator.metrics import Metrics
from lbtrain_operator.podstate import Limits, Observation, observe
from lbtrain_operator.settings import Settings

log = logging.getLogger("lbtrain.operator")
ANNOTATION_PULL_GRACE = "lbtrain.io/image-pull-grace-seconds"
SYNC_WAIT_S = 30.0
EVENT_POSTS_IN_FLIGHT = 8


@dataclass
class RunState:
    """A run's status as its daemon holds it: `status` is the truth (it may be ahead of the
    server when a write failed), `stored` what the server last confirmed."""

    status: dict[str, Any]
    stored: dict[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RunState:
        status = dict(body.get("status") or {})
        return cls(status=status, stored=dict(status))


@dataclass
class Context:
    """What every pass needs, created once at operator start.

    `kube_slots` bounds how many passes talk to the API server at once: a burst of new runs
    then queues here, in order, instead of as hundreds of requests and bodies in flight (which
    is what the operator's peak memory followed). Labelbox reports are not held by it.
    `burst` holds a new run's first status write while a burst's Jobs are being created.
    `event_slots` bounds Event posts on their own, so that Events never hold up status writes
    and never take more than a few of the client's connections.
    """

    kube: KubeClient
    reporter: LabelboxReporter
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    backlog: set[tuple[str, str]] = field(default_factory=set)
    objects: RunObjects = field(default_factory=RunObjects)
    kube_slots: asyncio.Semaphore = field(init=False)
    event_slots: asyncio.Semaphore = field(init=False)
    burst: BurstGate = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.kube_slots = asyncio.Semaphore(s.max_concurrent_passes)
        self.event_slots = asyncio.Semaphore(EVENT_POSTS_IN_FLIGHT)
        self.burst = BurstGate(s.burst_quiet_s, s.burst_max_hold_s)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _seconds_since(stamp: str | None, now: dt.datetime) -> float | None:
    if not stamp:
        return None
    return (now - dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()


def _conditions(status: dict[str, Any], obs: Observation, now: str) -> list[dict[str, Any]]:
    """Two conditions a person reads in `kubectl describe`: Running and Finished."""
    old = {c["type"]: c for c in status.get("conditions") or []}
    wanted = {
        "Running": ("True" if obs.phase in progress_phases() else "False", obs.reason, obs.message),
        "Finished": ("True" if obs.finished else "False", obs.reason, obs.message),
    }
    out = []
    for type_, (value, reason, message) in wanted.items():
        prev = old.get(type_)
        changed = not prev or prev.get("status") != value
        out.append(
            {
                "type": type_,
                "status": value,
                "reason": reason or "Unknown",
                "message": message[:2000],
                "lastTransitionTime": now if changed else prev["lastTransitionTime"],  # type: ignore[index]
            }
        )
    return out


def progress_phases() -> tuple[Phase, ...]:
    return (Phase.EXPORTING, Phase.PREPARING, Phase.TRAINING)


class Pass:
    """One reconcile pass. `status` starts as the last status written and ends as the new one.

    Events are queued by `emit` and posted by `post_events` after the status they describe was
    written: a burst's held writes hold their Events too.
    """

    def __init__(self, ctx: Context, body: Mapping[str, Any], status: dict[str, Any]):
        self.ctx, self.body = ctx, body
        self.events: list[dict[str, Any]] = []
        self.run = ModelRun.model_validate(dict(body))
        self.namespace = self.run.metadata.namespace or "default"
        self.name = self.run.metadata.name
        self.key = (self.namespace, self.name)
        self.status = dict(status)
        self.now = utcnow()
        self.created = False  # this pass created the Job
        self.in_burst = False  # ... while other runs' Jobs were being created: hold the write

    def emit(self, type_: str, reason: str, message: str) -> None:
        """Queue an Event (type Normal or Warning) about this run."""
        self.events.append(events.event_body(self.body, type_, reason, message, utcnow()))

    async def post_events(self) -> None:
        queued, self.events = self.events, []
        for body in queued:
            async with self.ctx.event_slots:
                await events.post(self.ctx.kube, body)

    async def ensure_job(
        self, templates: Mapping[str, dict[str, Any]]
    ) -> dict[str, Any] | Observation:
        """The run's Job (created from its template when missing), or a failure observation."""
        name = jobspec.job_name(self.name)
        if self.status.get("jobName"):
            cached = self.ctx.objects.job(self.key)
            if cached is not None and _owned_by(cached, self.body["metadata"]["uid"]):
                return cached
            try:  # not in the watch's store (yet): ask the server, which has the last word
                return await self.ctx.kube.get(JOBS, name, self.namespace)
            except NotFound:
                return Observation(Phase.FAILED, r.JOB_DELETED, r.MSG_JOB_DELETED.format(job=name))
        # No Job recorded yet: create it straight away (one request, not a GET first). If an
        # earlier operator created it and died before recording it, the create says so.
        template_body = templates.get(self.run.spec.model_type)
        if template_body is None:
            known = ", ".join(sorted(templates)) or "none"
            msg = r.MSG_TEMPLATE_MISSING.format(model_type=self.run.spec.model_type, known=known)
            return Observation(Phase.FAILED, r.TEMPLATE_MISSING, msg)
        try:
            template = TrainingTemplate.model_validate(template_body)
        except ValueError as exc:
            detail = str(exc).splitlines()[0]
            msg = r.MSG_INVALID_TEMPLATE.format(
                template=template_body["metadata"]["name"], detail=detail
            )
            return Observation(Phase.FAILED, r.INVALID_TEMPLATE, msg)
        job = jobspec.build_job(self.run, self.body["metadata"]["uid"], template, self.ctx.settings)
        job["metadata"]["annotations"][ANNOTATION_PULL_GRACE] = str(
            template.spec.image_pull_grace_period_seconds
        )
        try:
            # The answer echoes the Job (the largest body a pass handles); nothing reads it.
            await self.ctx.kube.create(JOBS, job, self.namespace, decode=False)
            created = job
            self.created = True
            self.in_burst = self.ctx.burst.job_created()
        except AlreadyExists:
            created = await self.ctx.kube.get(JOBS, name, self.namespace)
            if not _owned_by(created, self.body["metadata"]["uid"]):
                # A Job of a deleted ModelRun of the same name, not yet garbage-collected.
                raise Conflict(
                    409,
                    "Conflict",
                    f"Job {name} belongs to another ModelRun; waiting "
                    "for the garbage collector to remove it",
                ) from None
        except ApiError as exc:
            if exc.status in (400, 422):
                return Observation(
                    Phase.FAILED, r.JOB_REJECTED, r.MSG_JOB_REJECTED.format(detail=exc.message)
                )
            raise
        self.status.update(
            jobName=name,
            templateName=template.metadata.name,
            image=template.spec.image,
            gpus=template.spec.gpus,
            startTime=self.status.get("startTime") or outbox.iso(self.now),
        )
        waited = _seconds_since(self.body["metadata"].get("creationTimestamp"), self.now)
        if waited is not None:
            self.ctx.metrics.time_to_job.observe(waited)
        self.emit(
            "Normal",
            r.JOB_CREATED,
            r.MSG_JOB_CREATED.format(job=name, template=template.metadata.name),
        )
        return created

    async def observe(self, templates: Mapping[str, dict[str, Any]]) -> Observation:
        got = await self.ensure_job(templates)
        if isinstance(got, Observation):
            return got
        job = got
        if self.created:
            # Its pods are created after the Job: their events wake the next pass.
            return Observation(Phase.PENDING, r.WAITING_FOR_POD, r.MSG_WAITING_FOR_POD)
        pods = self.ctx.objects.pods(self.key)
        spec = job.get("spec") or {}
        limits = Limits(
            image_pull_grace_s=int(
                job["metadata"].get("annotations", {}).get(ANNOTATION_PULL_GRACE, 300)
            ),
            backoff_limit=int(spec.get("backoffLimit", 6)),
            active_deadline_s=int(spec.get("activeDeadlineSeconds") or 0),
        )
        obs = observe(job, pods, self.now, limits)
        if obs.phase is Phase.FAILED and not _job_finished(job):
            # Failures Kubernetes does not end by itself (an image that never pulls, a crash
            # loop): suspend the Job, which stops its pods and keeps it for inspection.
            await self.ctx.kube.patch(
                JOBS, job["metadata"]["name"], {"spec": {"suspend": True}}, self.namespace
            )
        return obs

    def apply(self, obs: Observation) -> None:
        """Fold an observation into the status and the outbox (pure, in memory)."""
        st, old_phase = self.status, self.status.get("phase")
        if obs.phase.value != old_phase or obs.reason != st.get("reason"):
            self.ctx.metrics.transitions.labels(obs.phase.value, obs.reason).inc()
            if obs.reason != r.WAITING_FOR_POD:  # JobCreated already said it
                self.emit(events.event_type(obs.phase, obs.reason), obs.reason, obs.message)
            if obs.finished:
                self.ctx.metrics.finished.labels(obs.phase.value, obs.reason).inc()
        if obs.phase in progress_phases() and not st.get("runningTime"):
            st["runningTime"] = obs.running_time or outbox.iso(self.now)
            waited = _seconds_since(self.body["metadata"].get("creationTimestamp"), self.now)
            if waited is not None:
                self.ctx.metrics.time_to_running.observe(waited)
        st.update(
            phase=obs.phase.value,
            reason=obs.reason,
            message=obs.message[:4000],
            attempts=obs.attempts,
            observedGeneration=self.body["metadata"].get("generation"),
        )
        for key, value in (("podName", obs.pod_name), ("nodeName", obs.node_name)):
            if value:
                st[key] = value
        if obs.summary:
            st["summary"] = obs.summary
        if obs.finished and not st.get("completionTime"):
            st["completionTime"] = outbox.iso(self.now)
        st["conditions"] = _conditions(st, obs, outbox.iso(self.now))
        box = outbox.Outbox.model_validate(st.get("labelbox") or {})
        new = progress.to_enqueue(box.last_queued, progress.statuses_for(obs))
        error = (
            progress.error_message(obs.reason, obs.message) if obs.phase is Phase.FAILED else None
        )
        box = outbox.enqueue(box, new, progress.metadata(st, obs), error, progress.notice(obs))
        st["labelbox"] = box.wire()

    def unsaved(self, state: RunState) -> bool:
        """Whether the status differs from what the server last confirmed."""
        return bool(_without_nulls(self.status) != _without_nulls(state.stored))

    async def write(self, state: RunState) -> None:
        """Store the status when it differs from what the server last confirmed."""
        if self.unsaved(state):
            patched = await self.ctx.kube.patch(
                MODELRUNS, self.name, {"status": self.status}, self.namespace, subresource="status"
            )
            self.status = dict(patched.get("status") or self.status)
            state.stored = dict(self.status)

    def report_due(self) -> outbox.Report | None:
        return outbox.due(outbox.Outbox.model_validate(self.status.get("labelbox") or {}), self.now)

    async def send(self, box: outbox.Outbox) -> outbox.Outbox:
        """Send everything `box` has due, in order, until one fails (which backs it off);
        answer the outbox after it. Stages a pod went through in quick succession thus reach
        Labelbox in one pass and are stored in one write. The status is not touched here: a
        write may be in flight while Labelbox answers (`report_and_store`)."""
        # Each report acknowledged shortens the queue (or tells the notice): the bound is a
        # guard, not a limit a run reaches.
        for _ in range(len(box.pending) + 1):
            report = outbox.due(box, self.now)
            if report is None:
                break
            box = await self._send_one(box, report)
        return box

    async def _send_one(self, box: outbox.Outbox, report: outbox.Report) -> outbox.Outbox:
        first_try = box.attempts == 0
        box, error = await send_report(self.ctx, self.run.spec.model_run_id, box, report)
        if isinstance(error, ModelRunNotFound) and first_try:
            detail = r.MSG_LABELBOX_MODEL_RUN_NOT_FOUND.format(detail=error)
            self.emit("Warning", r.LABELBOX_MODEL_RUN_NOT_FOUND, detail)
        return box

    def track(self, box: outbox.Outbox) -> float | None:
        """Count the run in the backlog while Labelbox lacks something; answer seconds until
        the next report is due (None: Labelbox has everything)."""
        if box.drained:
            self.ctx.backlog.discard(self.key)
        else:
            self.ctx.backlog.add(self.key)
        self.ctx.metrics.backlog.set(len(self.ctx.backlog))
        return outbox.next_wakeup(box, utcnow())

    async def report_and_store(self, state: RunState) -> float | None:
        """Tell Labelbox what is due, then store the status: the transition and Labelbox's
        acknowledgement of it in one write, instead of a write for each (11 status writes per
        run became 7 in bench/operator_bench.py). A Labelbox slower than `report_wait_s` does
        not hold the transition back: it is stored then, and the acknowledgement when it
        comes."""
        box = outbox.Outbox.model_validate(self.status.get("labelbox") or {})
        if outbox.due(box, self.now) is not None:
            sending = asyncio.ensure_future(self.send(box))
            try:
                done, _ = await asyncio.wait({sending}, timeout=self.ctx.settings.report_wait_s)
                if not done and self.unsaved(state):
                    async with self.ctx.kube_slots:
                        await self.write(state)
                box = await sending
            finally:
                sending.cancel()  # only when this pass is cancelled while Labelbox answers
            self.status["labelbox"] = box.wire()
        wake = self.track(box)
        if self.unsaved(state):
            async with self.ctx.kube_slots:
                await self.write(state)
        return wake


async def send_report(
    ctx: Context, model_run_id: str, box: outbox.Outbox, report: outbox.Report
) -> tuple[outbox.Outbox, ReportError | None]:
    """Send one due status to Labelbox, with its latency (and failure) in the metrics and a log
    line; answer the outbox after it (acknowledged, or backed off) and the error, if any. Every
    report goes through here: a reconcile pass's and a cancellation's."""
    started = utcnow()
    try:
        await ctx.reporter.update_status(
            model_run_id, report.status, report.metadata, report.error_message
        )
    except ReportError as exc:
        ctx.metrics.report_latency.labels("error").observe((utcnow() - started).total_seconds())
        ctx.metrics.report_failures.inc()
        s = ctx.settings
        box = outbox.failed(
            box, str(exc), utcnow(), s.report_backoff_initial_s, s.report_backoff_max_s
        )
        log.warning(
            "labelbox report failed",
            extra={
                "model_run_id": model_run_id,
                "status": report.status.value,
                "attempts": box.attempts,
                "error": str(exc),
            },
        )
        return box, exc
    ctx.metrics.report_latency.labels("ok").observe((utcnow() - started).total_seconds())
    log.info(
        "labelbox status sent", extra={"model_run_id": model_run_id, "status": report.status.value}
    )
    return outbox.acknowledge(box, report, utcnow()), None


def _without_nulls(value: Any) -> Any:
    """Nulls in a merge patch delete fields; compare what the server will store."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


async def _store_synced(objects: RunObjects) -> None:
    """Passes read Jobs and pods from the informers' store: wait until it has listed once."""
    if not objects.synced.is_set():
        try:
            await asyncio.wait_for(objects.synced.wait(), SYNC_WAIT_S)
        except TimeoutError:
            raise ApiUnreachable("the pod and Job watches have not listed yet") from None


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether `obj` belongs to the ModelRun `uid` (not to a deleted one of the same name)."""
    return any(o.get("uid") == uid for o in obj["metadata"].get("ownerReferences") or [])


def _job_finished(job: dict[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


async def reconcile(
    ctx: Context,
    body: Mapping[str, Any],
    state: RunState,
    templates: Mapping[str, dict[str, Any]],
) -> float | None:
    """One pass; answers the seconds until a pass is needed again (None: the run is finished
    and Labelbox has everything). `state` is updated even when the pass fails half-way, so a
    report Labelbox acknowledged is never sent again because storing the fact failed."""
    step = Pass(ctx, body, state.status)
    try:
        if not (Phase(state.status["phase"]).finished if state.status.get("phase") else False):
            await _store_synced(ctx.objects)  # before taking a slot: waiting here holds none
            async with ctx.kube_slots:
                step.apply(await step.observe(templates))
                if not step.in_burst and step.report_due() is None:
                    await step.write(state)  # nothing to tell Labelbox: store it in this slot
            if step.in_burst:  # the run's Job exists; its status waits for the burst to pass
                await ctx.burst.quiet()
                async with ctx.kube_slots:
                    await step.write(state)
        # Labelbox hears of a transition first, and the status is then stored with Labelbox's
        # answer. The Events follow, outside the pass slots (`Context.event_slots`), so they
        # never delay a report or a write.
        wake = await step.report_and_store(state)
        await step.post_events()
    finally:
        state.status = step.status
        if step.events:  # the pass failed half-way; its Events still tell what it decided
            await step.post_events()
    if Phase(step.status["phase"]).finished:
        return wake
    resync = ctx.settings.resync_interval_s
    return resync if wake is None else min(wake, resync)
