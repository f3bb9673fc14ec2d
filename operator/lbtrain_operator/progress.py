"""Which Labelbox statuses a run's progress calls for, and the metadata that goes with them.

Statuses follow the stage containers (export → EXPORTING_DATA, prepare → PREPARING_DATA,
train → TRAINING_MODEL) and end in COMPLETE or FAILED. Every stage a pod reached is reported,
in order, even when the operator only saw the run late (it was down, or the stage was brief),
so Labelbox's timeline is the same whatever the timing. Nothing is ever queued behind a final
status, and nothing of lower rank than what was already queued: Labelbox never goes backwards.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lbtrain import contract
from lbtrain.resources.models import LabelboxStatus, Phase
from lbtrain_operator import reasons as r
from lbtrain_operator.podstate import Observation

ERROR_MESSAGE_MAX = 255
STAGE_STATUS = {
    contract.STAGE_EXPORT: LabelboxStatus.EXPORTING_DATA,
    contract.STAGE_PREPARE: LabelboxStatus.PREPARING_DATA,
    contract.STAGE_TRAIN: LabelboxStatus.TRAINING_MODEL,
}
# Waiting reasons a Labelbox user should see while nothing runs: the run is at its first step
# (exporting) but blocked, and the metadata says why.
VISIBLE_WAITING = frozenset(
    {
        r.UNSCHEDULABLE,
        r.IMAGE_PULL_BACKOFF,
        r.VOLUME_PENDING,
        r.CONTAINER_CONFIG_ERROR,
        r.RETRYING,
        r.DISRUPTED,
        r.QUEUED,
    }
)


def statuses_for(obs: Observation) -> list[LabelboxStatus]:
    """Every status the observation implies, in order (earlier stages first)."""
    reached = obs.furthest_stage
    stages = list(contract.STAGES[: contract.STAGES.index(reached) + 1]) if reached else []
    if obs.phase is Phase.SUCCEEDED:
        return [*STAGE_STATUS.values(), LabelboxStatus.COMPLETE]
    steps = [STAGE_STATUS[s] for s in stages]
    if obs.phase is Phase.FAILED:
        return [*steps, LabelboxStatus.FAILED]
    if not steps and obs.reason in VISIBLE_WAITING:
        return [LabelboxStatus.EXPORTING_DATA]
    return steps


def to_enqueue(
    last_queued: LabelboxStatus | None, wanted: list[LabelboxStatus]
) -> list[LabelboxStatus]:
    """What of `wanted` is not queued yet: only after `last_queued`, and never after a final."""
    if last_queued is not None and last_queued.final:
        return []
    floor = last_queued.rank if last_queued is not None else -1
    out: list[LabelboxStatus] = []
    for status in wanted:
        if status.final:
            out.append(status)
            break
        if status.rank > floor:
            out.append(status)
            floor = status.rank
    return out


def error_message(reason: str, message: str) -> str:
    """Labelbox allows 255 characters: the reason first, then as much of the message as fits."""
    text = f"{reason}: {message}" if message else reason
    if len(text) <= ERROR_MESSAGE_MAX:
        return text
    return text[: ERROR_MESSAGE_MAX - 1].rstrip() + "…"


def notice(obs: Observation) -> str | None:
    """Why the run waits, when a Labelbox user should be told; None while it progresses."""
    return obs.message if obs.reason in VISIBLE_WAITING and not obs.finished else None


METADATA_KEYS = (
    "operator",
    "phase",
    "reason",
    "job",
    "pod",
    "node",
    "image",
    "gpus",
    "startTime",
    "runningTime",
    "attempts",
    "message",
    "completionTime",
    "summary",
)


def metadata(status: Mapping[str, Any], obs: Observation) -> dict[str, Any]:
    """What Labelbox shows beside the status. Only values that change on transitions, so a
    resync never re-sends an update for nothing. Every key is always present, an empty value
    as ``""``: Labelbox merges each update's metadata into what it holds, so a key left out
    would keep its old value (a "cannot be scheduled" message on a COMPLETE run)."""
    meta: dict[str, Any] = {
        "operator": "lbtrain",
        "phase": obs.phase.value,
        "reason": obs.reason,
        "job": status.get("jobName"),
        "pod": obs.pod_name,
        "node": obs.node_name,
        "image": status.get("image"),
        "gpus": status.get("gpus"),
        "startTime": status.get("startTime"),
        "runningTime": obs.running_time,
        "attempts": obs.attempts,
        "message": None,
        "completionTime": None,
        "summary": None,
    }
    if obs.reason in VISIBLE_WAITING or obs.phase is Phase.FAILED:
        meta["message"] = obs.message
    if obs.finished:
        meta["completionTime"] = status.get("completionTime")
    if obs.summary:
        meta["summary"] = obs.summary
    return {k: "" if meta[k] is None else meta[k] for k in METADATA_KEYS}


def _flat_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def flat_metadata(meta: Mapping[str, Any]) -> dict[str, str]:
    """The metadata as the SDK types it, ``Dict[str, str]``: a nested object's keys joined
    with dots (``summary.map``), every value a string (lists as JSON)."""
    out: dict[str, str] = {}
    for key, value in meta.items():
        if isinstance(value, Mapping) and value:
            for sub, inner in flat_metadata(value).items():
                out[f"{key}.{sub}"] = inner
        else:
            out[key] = _flat_value(value) if not isinstance(value, Mapping) else ""
    return out
