"""Labelbox-shaped ids for tests, benchmarks and the demo, that still read as what they are for.

The webhook and the ModelRun CRD accept only Labelbox ids (:mod:`lbtrain.ids`), so every run
the tools create needs one. ``fake_cuid("retry")`` is ``cretry0000000000000000000``: a valid
25-character cuid whose tag shows in ``kubectl get mr`` and in the logs.
"""

from __future__ import annotations

import hashlib
import re

from lbtrain.ids import is_labelbox_id

CUID_LENGTH = 25
_NOT_BASE36 = re.compile(r"[^a-z0-9]")


def fake_cuid(tag: str) -> str:
    """A cuid made from ``tag``'s letters and digits: ``c``, the tag, ``0`` padding to 25.

    A tag that does not fit keeps its first 16 characters and 8 hex digits of its hash, so
    long tags that share a beginning still give different ids.
    """
    body = _NOT_BASE36.sub("", tag.lower())
    if len(body) > CUID_LENGTH - 1:
        body = body[:16] + hashlib.sha256(tag.encode()).hexdigest()[:8]
    cuid = "c" + body.ljust(CUID_LENGTH - 1, "0")
    assert is_labelbox_id(cuid), cuid
    return cuid
