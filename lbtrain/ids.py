"""What a Labelbox id looks like: the one rule the webhook and the ModelRun CRD both enforce.

Labelbox names its objects with two kinds of id:

- **cuids** (organizations, projects, data rows, and older models): a lowercase letter then
  lowercase letters and digits. Classic cuids are 25 characters (``c`` + 24); cuid2, the
  successor, is 24 by default and at most 32. So: a lowercase letter, then 19 to 31 lowercase
  letters or digits.
- **UUIDs** (models and model runs): 8-4-4-4-12 hexadecimal digits. Labelbox writes them in
  lowercase; uppercase is allowed too, because RFC 9562 says readers must accept it.

Nothing else is a Labelbox id. The rule matters beyond tidiness: ids end up in resource names,
labels, and the artifact destination (``/artifacts/{modelRunId}``), so an id like
``../../etc`` must never be accepted. Neither shape can hold ``/``, ``.``, a space or a
control character, and neither is longer than 36 characters.

:data:`PATTERN` is written in the common subset of Python's ``re`` and RE2 (the API server's
CEL ``matches``), so the CRD carries exactly this text; a test compares the two.
"""

from __future__ import annotations

import re
from typing import Final

CUID: Final = r"[a-z][a-z0-9]{19,31}"
UUID: Final = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
PATTERN: Final = f"^({CUID}|{UUID})$"
MAX_LENGTH: Final = 36  # a UUID; a cuid is at most 32
RULE: Final = (
    "a Labelbox id: a cuid (a lowercase letter, then 19 to 31 lowercase letters or digits) "
    "or a UUID (8-4-4-4-12 hexadecimal digits)"
)
# The fields of a model run request that hold Labelbox ids (modelType is a name, not an id).
ID_FIELDS: Final = ("modelRunId", "modelId", "organizationId")

_MATCH = re.compile(PATTERN)


def is_labelbox_id(value: str) -> bool:
    """Whether ``value`` is a cuid or a UUID (see the module docstring)."""
    return len(value) <= MAX_LENGTH and _MATCH.fullmatch(value) is not None
