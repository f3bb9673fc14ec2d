"""Train/validation/test splits: the model run's own, and a stable hash for unassigned rows.

Labelbox lets the user assign each data row of a model run to a split. The export carries it
on the run object only with ``model_run_details``, under a key Labelbox does not document, so
the export stage does not trust its absence: when no exported row carries a split it reads them
from ``model_run.model_run_data_rows()`` (whose ``data_split`` is documented). Only rows that
Labelbox itself leaves unassigned get a split from a hash of their data row id, so a restarted
pod, or a second node, puts every row in the same split without coordination. :func:`plan`
decides, and counts where each row's split came from, so the log and the run's metadata can
say how many rows were hash-split instead of the user's choice going unnoticed.
"""

from __future__ import annotations

import enum
import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
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


class SplitSource(enum.StrEnum):
    EXPORT = "export"  # the export's run object
    LABELBOX = "labelbox"  # model_run.model_run_data_rows()
    HASH = "hash"  # unassigned in Labelbox: hashed from the data row id


# Labelbox's DataSplit enum names (what assign_data_rows_to_split takes).
DATA_SPLIT = {Split.TRAIN: "TRAINING", Split.VALIDATION: "VALIDATION", Split.TEST: "TEST"}


@dataclass(frozen=True)
class SplitPlan:
    """Every data row's split, and where it came from."""

    splits: dict[str, Split] = field(default_factory=dict)
    sources: dict[str, SplitSource] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Rows per source, every source named (0 included)."""
        tally = Counter(self.sources.values())
        return {source.value: tally[source] for source in SplitSource}

    def hashed(self) -> dict[Split, list[str]]:
        """The hash-assigned rows, by split (for writing them back to Labelbox)."""
        out: dict[Split, list[str]] = {}
        for row_id, source in self.sources.items():
            if source == SplitSource.HASH:
                out.setdefault(self.splits[row_id], []).append(row_id)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "splits": {k: v.value for k, v in self.splits.items()},
            "sources": {k: v.value for k, v in self.sources.items()},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SplitPlan:
        return cls(
            {k: Split(v) for k, v in raw["splits"].items()},
            {k: SplitSource(v) for k, v in raw["sources"].items()},
        )


def plan(
    exported: Mapping[str, Split | None],
    labelbox: Mapping[str, Split | None] | None,
    validation_fraction: float,
    test_fraction: float,
) -> SplitPlan:
    """Each row's split: the export's, else Labelbox's model run data rows', else the hash.

    ``exported`` maps every exported data row id to the split its export row carries;
    ``labelbox`` is what ``model_run_data_rows()`` says (``None``: not asked).
    """
    out = SplitPlan()
    for row_id, split in exported.items():
        from_labelbox = (labelbox or {}).get(row_id)
        if split is not None:
            out.splits[row_id], out.sources[row_id] = split, SplitSource.EXPORT
        elif from_labelbox is not None:
            out.splits[row_id], out.sources[row_id] = from_labelbox, SplitSource.LABELBOX
        else:
            out.splits[row_id] = hash_split(row_id, validation_fraction, test_fraction)
            out.sources[row_id] = SplitSource.HASH
    return out
