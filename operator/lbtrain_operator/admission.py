"""Admission: from a ModelRun and its namespace's TrainingTemplates to the Job it runs as, or the
reason it cannot run. A pure function, so every outcome is decided here and tested on plain
values, and `reconcile` only sends the Job (or stores the refusal).

Which template: the one the run records (`spec.template`, written by the webhook from the
template it listed to Labelbox under that name), whatever its generation now; for a run made by
hand without one, the template the catalogue says serves its `modelType`
(`lbtrain.resources.catalogue`, the rule the webhook answers `GET /models` with). A recorded
template that was deleted, or that now serves another Labelbox name, fails the run: building it
from another template would train something the user did not pick.

Then, in order: the template must parse, must not set a variable the operator or the launcher
owns (`contract.reserved_env`: a later duplicate would silently win in Kubernetes), must not ask
for processes per pod other than its GPUs (`scale.processes_mismatch`), the run's artifact
destination must stay under its root, a local destination must lie on a writable mount of the
pod (`storage.unwritable`), and a run of several pods needs a destination they all share
(`scale.unshared`). A run with a Kueue queue gets the queued Job (`queueing`). The Job returned
is exactly the Job created, and the claim (when the template has a claim template) and the
Service (for several pods) exactly those created before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lbtrain import contract
from lbtrain.destination import DestinationEscapes
from lbtrain.resources.catalogue import Catalogue
from lbtrain.resources.models import ModelRun, Phase, TrainingTemplate
from lbtrain_operator import jobspec, queueing, scale, storage
from lbtrain_operator import reasons as r
from lbtrain_operator.podstate import Observation
from lbtrain_operator.settings import Settings

# The API server's answers that mean "this Job can never be created" (malformed or invalid):
# retrying cannot help. Anything else (429, 5xx, 409) is retried by the pass.
REFUSING_STATUSES = frozenset({400, 422})

# The TrainingTemplate objects of a run's namespace, as a pass reads them.
Templates = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Admitted:
    """The Job to create, the template (at the generation) it was built from, the run's
    artifacts claim to create first (None: the template has no claim template), and the headless
    Service the pods of a multi-pod run find rank 0 through (None: one pod)."""

    job: dict[str, Any]
    template: TrainingTemplate
    claim: dict[str, Any] | None = None
    service: dict[str, Any] | None = None


@dataclass(frozen=True)
class Refused:
    """Why the run cannot start; it fails with this reason and message."""

    reason: str
    message: str

    def observation(self) -> Observation:
        return Observation(Phase.FAILED, self.reason, self.message)


def select(run: ModelRun, templates: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | Refused:
    """The TrainingTemplate object the run is built from (see the module docstring)."""
    by_name = {t["metadata"]["name"]: t for t in templates}
    wanted = run.spec.model_type
    recorded = run.spec.template
    if recorded is not None:
        body = by_name.get(recorded.name)
        fields = {"template": recorded.name, "model_type": wanted}
        if body is None:
            return Refused(r.TEMPLATE_MISSING, r.MSG_TEMPLATE_DELETED.format(**fields))
        serves = (body.get("spec") or {}).get("modelType")
        if serves != wanted:
            return Refused(r.TEMPLATE_MISSING, r.MSG_TEMPLATE_RENAMED.format(now=serves, **fields))
        return body
    catalogue = Catalogue.of_objects(by_name.values())
    listing = catalogue.serving(wanted)
    if listing is None:
        known = ", ".join(repr(n) for n in sorted(catalogue.names())) or "none"
        return Refused(
            r.TEMPLATE_MISSING, r.MSG_TEMPLATE_MISSING.format(model_type=wanted, known=known)
        )
    return by_name[listing.template]


def reserved_env(template: TrainingTemplate) -> Refused | None:
    """The refusal of a template whose `env` sets a variable the operator or the launcher owns,
    naming each one and where it is; None when it sets none."""
    name = template.metadata.name
    owned, launcher = contract.reserved_env(str(item.get("name")) for item in template.spec.env)
    messages = []
    if owned:
        messages.append(r.MSG_RESERVED_ENVIRONMENT.format(template=name, names=", ".join(owned)))
    if launcher:
        messages.append(
            r.MSG_RESERVED_LAUNCHER_ENVIRONMENT.format(template=name, names=", ".join(launcher))
        )
    return Refused(r.RESERVED_ENVIRONMENT, "; ".join(messages)) if messages else None


def admit(
    run: ModelRun,
    run_uid: str,
    templates: Iterable[Mapping[str, Any]],
    settings: Settings,
    run_body: Mapping[str, Any] | None = None,
) -> Admitted | Refused:
    """The run's Job, or why it cannot have one. `run_body` is the run as stored, for what only
    the operator reads from it (`queueing.queue_name`)."""
    body = select(run, templates)
    if isinstance(body, Refused):
        return body
    name = body["metadata"]["name"]
    try:
        template = TrainingTemplate.model_validate(dict(body))
    except ValueError as exc:
        detail = str(exc).splitlines()[0]
        return Refused(
            r.INVALID_TEMPLATE, r.MSG_INVALID_TEMPLATE.format(template=name, detail=detail)
        )
    reserved = reserved_env(template)
    if reserved is not None:
        return reserved
    mismatch = scale.processes_mismatch(template)
    if mismatch is not None:
        return Refused(r.INVALID_SCALE, mismatch)
    try:
        job = jobspec.build_job(run, run_uid, template, settings)
    except DestinationEscapes as exc:
        return Refused(
            r.ARTIFACT_DESTINATION_ESCAPES, r.MSG_ARTIFACT_DESTINATION_ESCAPES.format(detail=exc)
        )
    target = jobspec.artifacts_destination(job)
    mounts = storage.unwritable(target, template)
    if mounts is not None:
        message = r.MSG_ARTIFACT_DESTINATION_NOT_WRITABLE.format(
            destination=target, mounts=", ".join(mounts)
        )
        return Refused(r.ARTIFACT_DESTINATION_NOT_WRITABLE, message)
    shape = scale.scale_of(run, template)
    why = scale.unshared(target, template) if shape.multi_pod else None
    if why is not None:
        message = r.MSG_ARTIFACT_DESTINATION_NOT_SHARED.format(
            nodes=shape.nodes, destination=target, why=why
        )
        return Refused(r.ARTIFACT_DESTINATION_NOT_SHARED, message)
    job = queueing.queued_job(
        job, queueing.queue_name(run_body or {}, body, settings.default_queue)
    )
    claim = storage.build_claim(run, run_uid, template)
    service = scale.build_service(job, run.metadata.name, run_uid) if shape.multi_pod else None
    return Admitted(job, template, claim, service)


def claim_taken(claim: str, owner: str) -> Refused:
    """A claim of the run's claim name exists and is not the run's own."""
    return Refused(
        r.ARTIFACT_CLAIM_TAKEN, r.MSG_ARTIFACT_CLAIM_TAKEN.format(claim=claim, owner=owner)
    )


def claim_refused_by_server(claim: str, status: int, message: str) -> Refused | None:
    """The API server's refusal of the claim as the run's failure; None for answers worth a
    retry."""
    if status in REFUSING_STATUSES:
        return Refused(
            r.ARTIFACT_CLAIM_REJECTED,
            r.MSG_ARTIFACT_CLAIM_REJECTED.format(claim=claim, detail=message),
        )
    return None


def refused_by_server(status: int, message: str) -> Refused | None:
    """The API server's refusal of the Job as the run's failure; None for answers worth a
    retry."""
    if status in REFUSING_STATUSES:
        return Refused(r.JOB_REJECTED, r.MSG_JOB_REJECTED.format(detail=message))
    return None


def service_refused_by_server(service: str, status: int, message: str) -> Refused | None:
    """The API server's refusal of a multi-pod run's Service as the run's failure; None for
    answers worth a retry."""
    if status in REFUSING_STATUSES:
        return Refused(
            r.JOB_REJECTED, r.MSG_SERVICE_REJECTED.format(service=service, detail=message)
        )
    return None


def job_deleted(job_name: str) -> Refused:
    """The Job recorded in the status is gone before the run finished."""
    return Refused(r.JOB_DELETED, r.MSG_JOB_DELETED.format(job=job_name))
