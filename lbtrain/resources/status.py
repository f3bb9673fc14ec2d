"""The ModelRun status as typed models: what the operator writes and reads back after a restart.

`status` is written only by the operator, with JSON merge patches of the whole object. The
Labelbox outbox (`status.labelbox`) is the operator's durable memory of what it told Labelbox,
so its shape is the crash-safety contract: `sending` is written *before* a status goes to
Labelbox and cleared once Labelbox answered, so whatever Labelbox may have received is always
on record (see `lbtrain_operator.delivery`). The CRD schema in `crds/` mirrors these fields;
a field missing there would be pruned by the API server and silently forgotten.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from lbtrain.resources.models import LabelboxStatus, Phase, WireModel


class Condition(WireModel):
    """A metav1.Condition."""

    type: str
    status: str
    reason: str
    message: str
    last_transition_time: str


class SentReport(WireModel):
    """One `update_status` call exactly as it goes out, so a resend after a crash repeats it
    word for word (same metadata, same error message)."""

    status: LabelboxStatus
    metadata: dict[str, Any] = Field(default_factory=dict)
    error_message: str | None = None
    notice: str | None = None
    # The `measuredAt` of the training progress the metadata carries (docs/progress.md).
    progress_at: str | None = None


class LabelboxOutbox(WireModel):
    """`status.labelbox`: the statuses queued for Labelbox, the one being sent, the last one
    Labelbox acknowledged, and the retry state."""

    pending: list[LabelboxStatus] = Field(default_factory=list)
    desired: LabelboxStatus | None = None
    # Written ahead of the call: may have reached Labelbox, not known to have.
    sending: SentReport | None = None
    acknowledged: LabelboxStatus | None = None
    error_message: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Why a run waits (unschedulable, image pull, retrying): worth an update of its own, so a
    # Labelbox user sees it; and worth one more when it clears.
    notice: str | None = None
    acknowledged_notice: str | None = None
    attempts: int = 0
    last_error: str | None = None
    last_attempt_time: str | None = None
    next_attempt_time: str | None = None
    acknowledged_time: str | None = None
    # How much of the metadata Labelbox takes: "full", or after it rejected a report as invalid
    # "flat" (string values only), then "none"; and the rejection that made it so.
    metadata_form: str = "full"
    metadata_rejected: str | None = None
    # Live training progress (docs/progress.md): the report queued for Labelbox (it rides on
    # TRAINING_MODEL's metadata as `progress`), when it was queued (one per interval), and the
    # `measuredAt` of the one Labelbox last acknowledged.
    progress: dict[str, Any] | None = None
    progress_queued_time: str | None = None
    acknowledged_progress: str | None = None

    def wire(self) -> dict[str, Any]:
        """For a merge patch: unset fields are sent as null, which removes them from the
        stored status (a cleared notice, a finished send or a healed error must not linger)."""
        return self.model_dump(by_alias=True, mode="json")


class WorkerRow(WireModel):
    """One pod of the current attempt of a run of several pods, as `kubectl describe` lists it."""

    index: int
    pod: str | None = None
    node: str | None = None
    stage: str | None = None  # the stage container that runs or last ran: export, prepare, train
    state: str  # Pending, Running, Succeeded, Failed
    reason: str | None = None
    restarts: int = 0


class ModelRunStatus(WireModel):
    """`status` of a ModelRun."""

    phase: Phase | None = None
    reason: str | None = None
    message: str | None = None
    attempts: int | None = None
    observed_generation: int | None = None
    job_name: str | None = None
    pod_name: str | None = None
    node_name: str | None = None
    template_name: str | None = None
    template_generation: int | None = None
    task: str | None = None
    image: str | None = None
    gpus: int | None = None
    start_time: str | None = None
    running_time: str | None = None
    completion_time: str | None = None
    summary: dict[str, Any] | None = None
    # A run of several pods: its current attempt (one Job each, `<job>`, then `<job>-a2`, ...),
    # the failed attempts that spent its retry budget, and the current attempt's pods.
    attempt: int | None = None
    failed_attempts: int | None = None
    workers: list[WorkerRow] | None = None
    workers_up: str | None = None  # "running or done / wanted", the Workers column
    workers_omitted: int | None = None  # pods beyond the rows listed
    conditions: list[Condition] = Field(default_factory=list)
    labelbox: LabelboxOutbox = Field(default_factory=LabelboxOutbox)

    @property
    def finished(self) -> bool:
        return self.phase is not None and self.phase.finished

    def wire(self) -> dict[str, Any]:
        """The status for a merge patch: fields the operator never set are left out, the
        outbox is sent whole (its nulls delete what was cleared)."""
        body = self.model_dump(by_alias=True, mode="json", exclude_none=True, exclude={"labelbox"})
        if not self.conditions:
            body.pop("conditions", None)
        body["labelbox"] = self.labelbox.wire()
        return body

    def patch(self, stored: ModelRunStatus) -> dict[str, Any]:
        """The merge patch that stores this status over `stored` (what the server holds), with
        the outbox replaced exactly: a merge patch merges objects key by key, so a metadata key
        the run no longer has (the `message` of a wait that ended) would stay in the stored
        outbox, and after a restart a resent or next report would carry it, no longer the
        call that was written ahead."""
        body = self.wire()
        body["labelbox"] = replacing(stored.labelbox.wire(), body["labelbox"])
        return body


def replacing(old: Any, new: Any) -> Any:
    """A merge patch (RFC 7386) that turns `old` into exactly `new`: every key `old` has and
    `new` lacks, at any depth, is sent as null (deleted) instead of being left out (kept)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch = {key: replacing(old.get(key), value) for key, value in new.items()}
    patch.update(dict.fromkeys(old.keys() - new.keys()))
    return patch
