"""Labelbox ids for the runs a bench creates.

The ModelRun CRD and the webhook accept only Labelbox ids (`lbtrain.ids`: a cuid or a UUID), so
an id such as ``ceil-1000-0`` is refused with a 422 before anything is measured. `run_id` keeps
the bench's tag readable in ``kubectl get mr`` and in the logs; `random_cuid` is for the load
generators that need a fresh id per request.
"""

from __future__ import annotations

import random
import string

from lbtrain.ids import is_labelbox_id
from lbtrain_dev.ids import fake_cuid

_CUID_CHARS = string.ascii_lowercase + string.digits


def run_id(tag: str, i: int) -> str:
    """A valid cuid for the `i`-th run under `tag` (``run_id("ceil-1000", 7)``); the index is
    zero-padded, so one tag's runs never share an id."""
    return fake_cuid(f"{tag}-{i:07d}")


def random_cuid() -> str:
    """'c' and 24 random lowercase letters or digits, as Labelbox's classic cuids are."""
    cuid = "c" + "".join(random.choices(_CUID_CHARS, k=24))
    assert is_labelbox_id(cuid), cuid
    return cuid
