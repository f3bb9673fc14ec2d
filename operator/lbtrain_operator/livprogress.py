"""Live training progress: what a trainer's report may say, who may send it, what it shows.

Rank 0 of a training pod POSTs a report (epoch, step, loss, throughput, ETA) to the operator's
progress endpoint with an audience-bound projected service-account token (docs/progress.md).
The operator asks the API server who the token belongs to (a TokenReview) and accepts the
report only when the token is bound to a pod that belongs, through its Job, to the ModelRun of
the Labelbox model run the report names; anything else is refused, with a reason but never the
token in the log. An accepted report becomes `status.progress` (with the text of the `kubectl
get` column) and, through the outbox (`outbox.queue_progress`), the `progress` metadata of a
TRAINING_MODEL report to Labelbox.

The pods get no Kubernetes API rights and never write status: the operator stays its only
writer, and the trust decision is here, a pure function of the review and the objects.
Everything in this module is pure; `progress_server` does the I/O.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from lbtrain import contract
from lbtrain.resources.names import API_GROUP
from lbtrain.timestamps import parse_time

POD_NAME_EXTRA: Final = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA: Final = "authentication.kubernetes.io/pod-uid"
SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"
# A report from further ahead than this is refused (a clock that is badly off).
FUTURE_SKEW_S: Final = 300.0
BODY_MAX_BYTES: Final = 4096
METRIC_NAME_MAX: Final = 64

ACCEPTED = "Accepted"
# Reasons a report is refused, with the HTTP status and the message logged (never the token).
MISSING_TOKEN = "MissingToken"
MSG_MISSING_TOKEN = "no bearer token"
TOKEN_REFUSED = "TokenRefused"
MSG_TOKEN_REFUSED = "the API server did not authenticate the token for audience {audience}"
NOT_POD_BOUND = "NotPodBound"
MSG_NOT_POD_BOUND = "the token is not a service-account token bound to a pod"
POD_GONE = "PodGone"
MSG_POD_GONE = "pod {pod} does not exist (or is another pod of that name)"
NOT_A_RUN_POD = "NotARunPod"
MSG_NOT_A_RUN_POD = "pod {pod} does not belong to a ModelRun's Job"
OTHER_RUN = "OtherRun"
MSG_OTHER_RUN = "pod {pod} belongs to ModelRun {run}, not to model run {reported}"
RUN_FINISHED = "RunFinished"
MSG_RUN_FINISHED = "ModelRun {run} is finished; progress is no longer taken"
BAD_REPORT = "BadReport"
MSG_BAD_REPORT = "the report is not valid: {detail}"


@dataclass(frozen=True)
class Refusal:
    """Why a report is refused, and the HTTP status the trainer gets."""

    code: int
    reason: str
    message: str


@dataclass(frozen=True)
class Identity:
    """Whom the API server says the token belongs to."""

    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str


def _extra(user: Mapping[str, Any], key: str) -> str | None:
    values = (user.get("extra") or {}).get(key) or []
    return values[0] if len(values) == 1 and isinstance(values[0], str) else None


def identity_of(review_status: Mapping[str, Any], audience: str) -> Identity | Refusal:
    """The pod a TokenReview's answer names, or why the token is refused: it must be
    authenticated for our audience, a service account's, and bound to a pod."""
    audiences = review_status.get("audiences") or []
    if not review_status.get("authenticated") or audience not in audiences:
        return Refusal(401, TOKEN_REFUSED, MSG_TOKEN_REFUSED.format(audience=audience))
    user = review_status.get("user") or {}
    username = str(user.get("username") or "")
    parts = username.removeprefix(SERVICE_ACCOUNT_PREFIX).split(":")
    pod_name, pod_uid = _extra(user, POD_NAME_EXTRA), _extra(user, POD_UID_EXTRA)
    if not username.startswith(SERVICE_ACCOUNT_PREFIX) or len(parts) != 2 or not pod_name:
        return Refusal(403, NOT_POD_BOUND, MSG_NOT_POD_BOUND)
    if not pod_uid:
        return Refusal(403, NOT_POD_BOUND, MSG_NOT_POD_BOUND)
    return Identity(parts[0], parts[1], pod_name, pod_uid)


def controller(obj: Mapping[str, Any], kind: str, api_group: str) -> tuple[str, str] | None:
    """(name, uid) of `obj`'s controlling owner of that kind and API group, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        group = str(ref.get("apiVersion", "")).rpartition("/")[0]
        if ref.get("controller") and ref.get("kind") == kind and group == api_group:
            return str(ref.get("name")), str(ref.get("uid"))
    return None


def _uid(obj: Mapping[str, Any] | None) -> str | None:
    return None if obj is None else (obj.get("metadata") or {}).get("uid")


def check_pod(who: Identity, pod: Mapping[str, Any] | None) -> tuple[str, str] | Refusal:
    """The pod must be the very one the token was bound to (same uid), and a Job's: answers
    the Job's (name, uid)."""
    label = f"{who.namespace}/{who.pod_name}"
    if pod is None or _uid(pod) != who.pod_uid:
        return Refusal(403, POD_GONE, MSG_POD_GONE.format(pod=label))
    job = controller(pod, "Job", "batch")
    if job is None:
        return Refusal(403, NOT_A_RUN_POD, MSG_NOT_A_RUN_POD.format(pod=label))
    return job


def check_job(
    who: Identity, job: Mapping[str, Any] | None, job_uid: str
) -> tuple[str, str] | Refusal:
    """The pod's Job must exist (same uid) and be a ModelRun's: answers the run's (name, uid)."""
    label = f"{who.namespace}/{who.pod_name}"
    run = controller(job, "ModelRun", API_GROUP) if job is not None else None
    if job is None or _uid(job) != job_uid or run is None:
        return Refusal(403, NOT_A_RUN_POD, MSG_NOT_A_RUN_POD.format(pod=label))
    return run


def check_run(
    who: Identity, run: Mapping[str, Any] | None, run_uid: str, reported_run_id: str
) -> Refusal | None:
    """The ModelRun must be the Job's owner (same uid), for the model run the report names,
    and still running."""
    label = f"{who.namespace}/{who.pod_name}"
    if run is None or _uid(run) != run_uid:
        return Refusal(403, NOT_A_RUN_POD, MSG_NOT_A_RUN_POD.format(pod=label))
    name = f"{who.namespace}/{run['metadata']['name']}"
    if (run.get("spec") or {}).get("modelRunId") != reported_run_id:
        return Refusal(
            403, OTHER_RUN, MSG_OTHER_RUN.format(pod=label, run=name, reported=reported_run_id)
        )
    if ((run.get("status") or {}).get("phase") or "") in ("Succeeded", "Failed"):
        return Refusal(409, RUN_FINISHED, MSG_RUN_FINISHED.format(run=name))
    return None


# --- the report --------------------------------------------------------------------------------

_INTS = ("epoch", "epochs", "step", "steps")
_NUMBERS = ("trainLoss", "validationValue", "examplesPerSecond", "etaSeconds")
_NON_NEGATIVE = ("examplesPerSecond", "etaSeconds")


def stamp(moment: dt.datetime) -> str:
    """A progress timestamp: UTC with milliseconds, so reports in one second stay in order and
    compare as strings."""
    utc = moment.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _bad(detail: str) -> Refusal:
    return Refusal(400, BAD_REPORT, MSG_BAD_REPORT.format(detail=detail))


def parse_report(raw: Any, now: dt.datetime) -> dict[str, Any] | Refusal:
    """The report with every field of `contract.PROGRESS_FIELDS` (unknown ones dropped),
    numbers finite and in range, `measuredAt` normalized; or why it is refused."""
    if not isinstance(raw, Mapping):
        return _bad("not a JSON object")
    run_id = raw.get("modelRunId")
    if not isinstance(run_id, str) or not run_id:
        return _bad("modelRunId is missing")
    out: dict[str, Any] = {"modelRunId": run_id}
    for key in _INTS:
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return _bad(f"{key} must be a whole number >= 0")
        out[key] = value
    if not 0 < out["epoch"] <= out["epochs"] or out["step"] > out["steps"]:
        return _bad("epoch must be in 1..epochs and step in 0..steps")
    for key in _NUMBERS:
        value = raw.get(key)
        if value is None:
            out[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _bad(f"{key} must be a number or null")
        if not math.isfinite(value) or (
            key != "trainLoss" and key != "validationValue" and value < 0
        ):
            return _bad(f"{key} must be finite (and >= 0)")
        out[key] = float(value)
    metric = raw.get("validationMetric")
    if metric is not None and (not isinstance(metric, str) or len(metric) > METRIC_NAME_MAX):
        return _bad("validationMetric must be a short string or null")
    out["validationMetric"] = metric
    measured = raw.get("measuredAt")
    try:
        when = parse_time(measured) if isinstance(measured, str) else None
    except ValueError:
        when = None
    if when is None or (when - now).total_seconds() > FUTURE_SKEW_S:
        return _bad("measuredAt must be an RFC 3339 time, not in the future")
    out["measuredAt"] = stamp(when)
    return {key: out[key] for key in contract.PROGRESS_FIELDS}


def human_duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def percent(report: Mapping[str, Any]) -> float:
    steps = report.get("steps") or 0
    return round(100.0 * report["step"] / steps, 1) if steps else 0.0


def column_text(report: Mapping[str, Any]) -> str:
    """What `kubectl get mr` shows: `epoch 3/10 · 41% · accuracy 0.812 · ETA 12m30s` (the last
    validation value once there is one; an ETA as text: a future time in a `date` column
    prints `<invalid>`)."""
    text = f"epoch {report['epoch']}/{report['epochs']} · {percent(report):.0f}%"
    metric, value = report.get("validationMetric"), report.get("validationValue")
    if metric and isinstance(value, int | float):
        text = f"{text} · {metric} {value:.3f}"
    eta = report.get("etaSeconds")
    return text if eta is None else f"{text} · ETA {human_duration(eta)}"


def status_progress(report: Mapping[str, Any], pod: str, now: dt.datetime) -> dict[str, Any]:
    """`status.progress`: the report's numbers, the column's text, and who sent it when."""
    body = {k: v for k, v in report.items() if k != "modelRunId" and v is not None}
    eta = report.get("etaSeconds")
    return {
        **body,
        "text": column_text(report),
        "percent": percent(report),
        **({"eta": human_duration(eta)} if eta is not None else {}),
        "receivedAt": stamp(now),
        "pod": pod,
    }


def newer(stored: Mapping[str, Any] | None, report: Mapping[str, Any]) -> bool:
    """Whether `report` is newer than the stored progress (a late retry never goes back)."""
    old = (stored or {}).get("measuredAt")
    return not isinstance(old, str) or report["measuredAt"] > old


def labelbox_progress(status_progress_: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The `progress` metadata object Labelbox gets: every field of a report, always present
    (`""` for a value the trainer does not have, as the rest of the metadata), so Labelbox's
    merge never keeps a stale one."""
    if not status_progress_ or not isinstance(status_progress_.get("measuredAt"), str):
        return None
    fields = [k for k in contract.PROGRESS_FIELDS if k != "modelRunId"]
    out = {k: status_progress_.get(k) for k in fields}
    out["text"] = status_progress_.get("text")
    return {k: "" if v is None else v for k, v in out.items()}
