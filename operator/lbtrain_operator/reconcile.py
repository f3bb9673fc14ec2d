"""One reconcile pass over one ModelRun: ensure its Job, observe it, store its status, and
tell Labelbox. This module only reads, writes and sends; every decision is a pure function of
another module: which Job the run gets or why it gets none (`admission`), what the pods show
(`podstate`; `workers` and `attempts` for a run of several pods, which also say when its next
attempt's Job is due), what the status becomes (`runstatus`), what Labelbox is due and when
each step must be stored (`delivery`, `outbox`, `progress`). The steps with I/O of their own are
modules too: creating or adopting the objects the run owns (`children`), the next attempt of a
run of several pods (`attemptstep`) and a run whose Job Kueue holds (`queuestep`); this module
orders them. What every pass shares is `context.Context`.

Only the run's own daemon (and, after it stopped, the deletion handler) writes the status, so the
pass keeps the status it last wrote as the truth instead of a watch event that may lag behind:
that is what stops a quick second pass from queueing the same Labelbox status twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from lbtrain.kube import (
    EVENTS,
    JOBS,
    MODELRUNS,
    ApiUnreachable,
    KubeClient,
    NotFound,
)
from lbtrain.resources.models import ModelRun, Phase
from lbtrain.resources.status import ModelRunStatus
from lbtrain.timestamps import seconds_since
from lbtrain_operator import (
    admission,
    attemptstep,
    children,
    delivery,
    events,
    jobspec,
    livprogress,
    outbox,
    owners,
    podstate,
    queueing,
    queuestep,
    runstatus,
    templatesource,
    workers,
)
from lbtrain_operator import reasons as r
from lbtrain_operator.admission import Templates
from lbtrain_operator.context import Context, utcnow
from lbtrain_operator.delivery import RunState
from lbtrain_operator.informer import RunObjects
from lbtrain_operator.labelbox import (
    ModelRunNotFound,
    ReportError,
    ReportRejected,
)
from lbtrain_operator.podstate import Observation, limits_of, observe

log = logging.getLogger("lbtrain.operator")
SYNC_WAIT_S = 30.0


class Pass:
    """One reconcile pass. `state.status` starts as the last status written and ends as the new
    one.

    Events are queued by `emit` and posted by `post_events` after the status they describe was
    written: a burst's held writes hold their Events too.
    """

    def __init__(self, ctx: Context, body: Mapping[str, Any], state: RunState):
        self.ctx, self.body, self.state = ctx, body, state
        self.events: list[dict[str, Any]] = []
        self.run = ModelRun.model_validate(dict(body))
        self.namespace = self.run.metadata.namespace or "default"
        self.name = self.run.metadata.name
        self.key = (self.namespace, self.name)
        self.now = utcnow()
        self.created = False  # this pass created the Job
        self.queued = False  # Kueue holds the run's Job: look again soon (`queueing.POLL_S`)
        self.in_burst = False  # ... while other runs' Jobs were being created: hold the write
        self.retired: str | None = None  # a failed attempt's Job, deleted once the next is stored

    @property
    def status(self) -> ModelRunStatus:
        return self.state.status

    def emit(self, type_: str, reason: str, message: str) -> None:
        """Queue an Event (type Normal or Warning) about this run."""
        self.events.append(events.event_body(self.body, type_, reason, message, utcnow()))

    async def post_events(self) -> None:
        queued, self.events = self.events, []
        for body in queued:
            async with self.ctx.event_slots:
                await events.post(self.ctx.kube, body)

    async def ensure_job(self, templates: Templates) -> dict[str, Any] | Observation:
        """The run's Job (created as admission built it when missing), or a failure."""
        name = jobspec.job_name(self.name)
        uid = self.body["metadata"]["uid"]
        kube = self.ctx.kube
        if self.status.job_name:
            name = self.status.job_name  # the current attempt's (`attemptstep`)
            cached = self.ctx.objects.job(self.key)
            if (
                cached is not None
                and cached["metadata"]["name"] == name
                and owners.owned_by(cached, uid)
            ):
                return cached
            try:  # not in the watch's store (yet): ask the server, which has the last word
                return await kube.get(JOBS, name, self.namespace)
            except NotFound:
                return admission.job_deleted(name).observation()
        # No Job recorded yet: create it straight away (`children`). If an earlier operator
        # created it and died before recording it, the create says so.
        admitted = await templatesource.admit(
            kube, self.run, uid, templates, self.ctx.settings, self.body
        )
        if isinstance(admitted, admission.Refused):
            return admitted.observation()
        job, template = admitted.job, admitted.template
        if admitted.claim is not None:
            refused = await children.ensure_claim(
                kube, admitted.claim, self.namespace, self.name, uid
            )
            if refused is not None:
                return refused.observation()
        if admitted.service is not None:
            refused = await children.ensure_service(kube, admitted.service, self.namespace, uid)
            if refused is not None:
                return refused.observation()
        got = await children.ensure_job(kube, job, self.namespace, uid)
        if isinstance(got, admission.Refused):
            return got.observation()
        created, self.created = got
        if self.created:
            self.in_burst = self.ctx.burst.job_created()
        self.state.status = runstatus.record_job(self.status, name, template, self.now)
        waited = seconds_since(self.body["metadata"].get("creationTimestamp"), self.now)
        if waited is not None:
            self.ctx.metrics.time_to_job.observe(waited)
        self.emit("Normal", r.JOB_CREATED, runstatus.job_created_message(name, self.run, template))
        return created

    async def volume_messages(self, obs: Observation) -> list[str]:
        """The kubelet's messages about the volumes of a pod that is starting (FailedMount,
        FailedAttachVolume Events), newest last; read only for a pod that has waited a while,
        since most pods start without one."""
        if obs.reason != r.CONTAINER_CREATING or not obs.pod_name:
            return []
        listed = await self.ctx.kube.list(
            EVENTS,
            self.namespace,
            field_selector=f"involvedObject.kind=Pod,involvedObject.name={obs.pod_name}",
        )
        return podstate.volume_event_messages(listed.get("items") or [])

    async def observe(self, templates: Templates) -> Observation:
        got = await self.ensure_job(templates)
        if isinstance(got, Observation):
            return got
        job = got
        pods = self.ctx.objects.pods(self.key)
        if queueing.held(job):
            self.queued = True
            return await queuestep.observe(
                self.ctx.kube, self.namespace, job, pods, just_created=self.created
            )
        if self.created:
            # Its pods are created after the Job: their events wake the next pass.
            return Observation(Phase.PENDING, r.WAITING_FOR_POD, r.MSG_WAITING_FOR_POD)
        limits = limits_of(job)
        if workers.is_gang(job):
            obs = await self.observe_attempt(job, workers.of_job(pods, job), limits, templates)
        else:
            obs = observe(job, pods, self.now, limits)
        if podstate.volume_events_due(obs, pods, self.now):
            obs = podstate.volume_wait(obs, await self.volume_messages(obs), pods, self.now, limits)
        if runstatus.must_suspend(obs, runstatus.job_finished(job)):
            await self.ctx.kube.patch(
                JOBS, job["metadata"]["name"], {"spec": {"suspend": True}}, self.namespace
            )
        return obs

    async def observe_attempt(
        self, job: dict[str, Any], pods: list[dict[str, Any]], limits: podstate.Limits,
        templates: Templates,
    ) -> Observation:  # fmt: skip
        """A run of several pods: its current attempt, or the next one once it failed
        (`attemptstep`)."""
        uid = self.body["metadata"]["uid"]
        step = await attemptstep.observe(
            self.ctx.kube,
            self.run,
            uid,
            job,
            pods,
            self.status,
            self.now,
            limits,
            templates,
            self.ctx.settings,
        )
        self.state.status = step.status
        if step.retired is not None:
            self.retired = step.retired
        if step.created is not None:
            self.emit("Normal", r.JOB_CREATED, step.created)
        return step.observation

    async def retire(self) -> None:
        """Delete the failed attempt's Job once the status that names the next attempt is
        stored (`attemptstep.retire`)."""
        stored = self.state.stored.job_name
        if await attemptstep.retire(self.ctx.kube, self.namespace, self.retired, stored):
            self.retired = None

    def apply(self, obs: Observation) -> None:
        """Fold an observation into the status (in memory), with its Events and metrics."""
        old = self.status
        if runstatus.is_transition(old, obs):
            self.ctx.metrics.transitions.labels(obs.phase.value, obs.reason).inc()
            if runstatus.announces(obs):
                self.emit(events.event_type(obs.phase, obs.reason), obs.reason, obs.message)
            if obs.finished:
                self.ctx.metrics.finished.labels(obs.phase.value, obs.reason).inc()
        if runstatus.starts_running(old, obs):
            waited = seconds_since(self.body["metadata"].get("creationTimestamp"), self.now)
            if waited is not None:
                self.ctx.metrics.time_to_running.observe(waited)
        self.state.status = runstatus.fold(
            old, obs, self.now, self.body["metadata"].get("generation")
        )
        self.ctx.metrics.count_active(self.key, self.status.phase)

    def latest_progress(self) -> dict[str, Any] | None:
        """The run's newest live progress: its `status.progress`, or the one this replica's
        endpoint just stored (the body may not have it yet)."""
        seen = (self.body.get("status") or {}).get("progress")
        mine = self.ctx.live_progress.get(self.key)
        if mine is not None and livprogress.newer(seen, mine):
            return mine
        return seen if isinstance(seen, dict) else None

    def queue_progress(self) -> None:
        """Queue the newest training progress for Labelbox (`outbox.queue_progress`)."""
        progress = livprogress.labelbox_progress(self.latest_progress())
        box = outbox.queue_progress(
            self.status.labelbox, progress, self.now, self.ctx.settings.progress_interval_s
        )
        self.state.status = self.status.model_copy(update={"labelbox": box})

    async def write(self, state: RunState) -> None:
        await write_status(self.ctx.kube, self.name, self.namespace, state)

    async def store(self, state: RunState) -> None:
        async with self.ctx.kube_slots:
            await self.write(state)

    def report_due(self) -> bool:
        return outbox.due(self.status.labelbox, self.now) is not None

    async def send(self, box: outbox.Outbox, report: outbox.Report) -> outbox.Outbox:
        first_try, form = box.attempts == 0, box.metadata_form
        box, error = await send_report(self.ctx, self.run.spec.model_run_id, box, report)
        if isinstance(error, ModelRunNotFound) and first_try:
            detail = r.MSG_LABELBOX_MODEL_RUN_NOT_FOUND.format(detail=error)
            self.emit("Warning", r.LABELBOX_MODEL_RUN_NOT_FOUND, detail)
        if isinstance(error, ReportRejected) and box.metadata_form != form:
            detail = r.MSG_LABELBOX_METADATA_REJECTED.format(
                status=report.status.value, detail=error, form=box.metadata_form
            )
            self.emit("Warning", r.LABELBOX_METADATA_REJECTED, detail)
        return box

    def track(self) -> float | None:
        """Count the run in the backlog while Labelbox lacks something; answer seconds until
        the pass is needed again for Labelbox (None: Labelbox has everything, and it is
        stored)."""
        box = self.status.labelbox
        if outbox.drained(box):
            self.ctx.backlog.discard(self.key)
        else:
            self.ctx.backlog.add(self.key)
        self.ctx.metrics.backlog.set(len(self.ctx.backlog))
        wake = delivery.wakeup(
            self.status, self.state.stored, utcnow(), self.ctx.settings.report_wait_s
        )
        progress = livprogress.labelbox_progress(self.latest_progress())
        held = outbox.progress_wakeup(
            self.status.labelbox, progress, utcnow(), self.ctx.settings.progress_interval_s
        )
        return wake if held is None else held if wake is None else min(wake, held)

    async def report(self) -> float | None:
        """Tell Labelbox what is due, each call stored ahead of it (`delivery`)."""
        await delivery.deliver(
            self.state, self.store, self.send, utcnow, self.ctx.settings.report_wait_s
        )
        return self.track()


async def write_status(kube: KubeClient, name: str, namespace: str, state: RunState) -> None:
    """Store `state.status` (a merge patch of the whole status over `state.stored`, the
    outbox replaced exactly); once the server confirmed it, it is `state.stored`. A status the
    server already holds is not written again."""
    if not state.unsaved:
        return
    status = state.status
    patch = {"status": status.patch(state.stored)}
    await kube.patch(MODELRUNS, name, patch, namespace, subresource="status", decode=False)
    state.stored = status


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
        # An invalid report is sent again at once with plainer metadata; anything else waits.
        degrade = outbox.rejected if isinstance(exc, ReportRejected) else outbox.failed
        box = degrade(box, str(exc), utcnow(), s.report_backoff_initial_s, s.report_backoff_max_s)
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


async def _store_synced(objects: RunObjects) -> None:
    """Passes read Jobs and pods from the informers' store: wait until it has listed once."""
    if not objects.synced.is_set():
        try:
            await asyncio.wait_for(objects.synced.wait(), SYNC_WAIT_S)
        except TimeoutError:
            raise ApiUnreachable("the pod and Job watches have not listed yet") from None


async def reconcile(
    ctx: Context,
    body: Mapping[str, Any],
    state: RunState,
    templates: Templates,
) -> float | None:
    """One pass; answers the seconds until a pass is needed again (None: the run is finished
    and Labelbox has everything). `state` is updated even when the pass fails half-way, so what
    was sent and stored is never forgotten by the daemon."""
    step = Pass(ctx, body, state)
    try:
        if not state.status.finished:
            await _store_synced(ctx.objects)  # before taking a slot: waiting here holds none
            async with ctx.kube_slots:
                step.apply(await step.observe(templates))
                step.queue_progress()
                if not step.in_burst and not step.report_due():
                    await step.write(state)  # nothing to tell Labelbox: store it in this slot
            if step.in_burst:  # the run's Job exists; its status waits for the burst to pass
                await ctx.burst.quiet()
                async with ctx.kube_slots:
                    await step.write(state)
        # The transition is stored with the first Labelbox call it calls for, ahead of the
        # call; the Events follow, outside the pass slots (`Context.event_slots`), so they
        # never delay a report or a write.
        wake = await step.report()
        await step.retire()
        await step.post_events()
    finally:
        if step.events:  # the pass failed half-way; its Events still tell what it decided
            await step.post_events()
    if state.status.finished:
        return wake
    resync = ctx.settings.resync_interval_s
    if step.queued:
        resync = min(resync, queueing.POLL_S)
    return resync if wake is None else min(wake, resync)
