"""ModelRun names and label values derived from Labelbox ids, deterministically.

A ModelRun's name is its `modelRunId` when that already is a valid lowercase DNS-1123 label of at
most 63 characters (Labelbox ids are cuids or lowercase UUIDs, so usually it is): then
`kubectl get mr <modelRunId>` just works. Otherwise it is `mr-<sanitised>-<hash>`: the id
lowercased, runs of other characters turned into '-', cut to fit, plus the first 10 hex digits
of SHA-256 of the exact id so that ids differing only in case or punctuation do not collide.
The exact id is kept in `spec.modelRunId` and an annotation; a name clash between two different
ids is caught by the idempotency check (409), never silently merged.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME_LENGTH = 63  # a DNS-1123 label: Job and pod names built from it must stay valid
HASH_LENGTH = 10
NAME_PREFIX = "mr-"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_NOT_NAME = re.compile(r"[^a-z0-9]+")


def is_dns_label(value: str) -> bool:
    return len(value) <= MAX_NAME_LENGTH and _DNS_LABEL.fullmatch(value) is not None


def short_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_LENGTH]


def model_run_name(model_run_id: str) -> str:
    """The ModelRun name for a Labelbox model run id (see the module docstring)."""
    if is_dns_label(model_run_id):
        return model_run_id
    room = MAX_NAME_LENGTH - len(NAME_PREFIX) - 1 - HASH_LENGTH
    sanitised = _NOT_NAME.sub("-", model_run_id.lower()).strip("-")[:room].strip("-")
    middle = f"{sanitised}-" if sanitised else ""
    return f"{NAME_PREFIX}{middle}{short_hash(model_run_id)}"
