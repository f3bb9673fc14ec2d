"""The termination message: a JSON summary of at most 4096 bytes for the operator.

Kubernetes keeps the last 4096 bytes a container writes to its termination message path and
shows them in the pod status; the operator merges the train stage's summary (artifact URIs,
headline metrics) into the Labelbox metadata, and reads a failed stage's ``error``. A summary
that would not fit loses its bulkiest optional parts first, so it always parses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lbtrain import contract

log = logging.getLogger(__name__)

# Dropped, in this order, until the summary fits.
OPTIONAL_KEYS = (
    "per_class",
    "first_rejections",
    "dropped_rows",
    "ignored_hyperparameters",
    "hyperparameters",
    "imports",
    "throughput",
    "metrics",
)


def encode(
    summary: Mapping[str, Any], limit: int = contract.TERMINATION_MESSAGE_MAX_BYTES
) -> bytes:
    """Serialise ``summary`` as compact JSON of at most ``limit`` bytes."""
    data = dict(summary)

    def dump(value: Mapping[str, Any]) -> bytes:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str).encode()

    text = dump(data)
    for key in OPTIONAL_KEYS:
        if len(text) <= limit:
            return text
        if key in data:
            data.pop(key)
            data["truncated"] = True
            text = dump(data)
    while len(text) > limit:  # long strings (an error message): shorten the longest
        longest = max(
            (k for k, v in data.items() if isinstance(v, str)),
            key=lambda k: len(str(data[k])),
            default=None,
        )
        if longest is None:
            return dump({"truncated": True})
        value = str(data[longest])
        data[longest] = value[: max(0, len(value) - (len(text) - limit) - 16)] + "…"
        text = dump(data)
    return text


def default_path(configured: Path | None) -> Path | None:
    """The configured path, else Kubernetes' default when it exists (inside a pod)."""
    if configured is not None:
        return configured
    default = Path(contract.DEFAULT_TERMINATION_MESSAGE_PATH)
    return default if default.exists() else None


def write(summary: Mapping[str, Any], path: Path | None) -> bytes:
    """Write the summary to ``path`` (if any) and return the bytes written."""
    data = encode(summary)
    target = default_path(path)
    if target is not None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        except OSError as exc:  # the summary must never be why a stage fails
            log.warning("cannot write termination message to %s: %s", target, exc)
    return data
