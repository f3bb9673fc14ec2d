"""Train/validation/test splits: the model run's own, and a stable hash for unassigned rows.

Labelbox lets the user assign each data row of a model run to a split; the export carries it
on the run object. Rows left unassigned get a split from a hash of their data row id, so a
restarted pod, or a second node, puts every row in the same split without coordination.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from typing import Any


class Split(enum.StrEnum):
    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"


_ALIASES: dict[str, Split | None] = {
    "training": Split.TRAIN,
    "train": Split.TRAIN,
    "validation": Split.VALIDATION,
    "valid": Split.VALIDATION,
    "val": Split.VALIDATION,
    "test": Split.TEST,
    "testing": Split.TEST,
    "unassigned": None,
    "": None,
}
# Keys under which the export's run object may carry the split. The exact key is unverified
# (docs/labelbox.md §5.1), so accept the plausible spellings; the value may be a string
# ("training", "TRAINING") or an object with a "name".
SPLIT_KEYS = ("split", "data_split", "dataSplit")


def parse_split(value: Any) -> Split | None:
    """Normalise a Labelbox split value; ``None`` means unassigned (or unknown)."""
    if isinstance(value, Mapping):
        value = value.get("name") or value.get("value") or value.get("split")
    if not isinstance(value, str):
        return None
    return _ALIASES.get(value.strip().lower())


def split_from_run(run: Mapping[str, Any]) -> Split | None:
    for key in SPLIT_KEYS:
        if key in run:
            return parse_split(run[key])
    return None


def hash_split(data_row_id: str, validation_fraction: float, test_fraction: float) -> Split:
    """A deterministic split from the data row id (uniform in [0, 1) from SHA-256)."""
    digest = hashlib.sha256(data_row_id.encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return Split.TEST
    if u < test_fraction + validation_fraction:
        return Split.VALIDATION
    return Split.TRAIN
