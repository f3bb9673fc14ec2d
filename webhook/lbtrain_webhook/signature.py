"""The Labelbox webhook signature: `X-Hub-Signature: sha1=<hex HMAC-SHA1(secret, raw body)>`.

`verify` does the same work whatever the header holds (absent, malformed or wrong): it computes
the HMAC with every configured secret and compares in constant time against a fixed-length
candidate, so neither the answer nor its timing tells a caller which case it hit.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import Literal

SIGNATURE_HEADER = "X-Hub-Signature"
PREFIX = "sha1="
SIGNATURE_LENGTH = len(PREFIX) + 40
_WELL_FORMED = re.compile(r"sha1=[0-9a-f]{40}")
_FILLER = b"\0" * SIGNATURE_LENGTH
# Used when no secret is configured, so the work (and the "no") stays the same.
_NO_SECRET = b"lbtrain: no secret configured"

FailureReason = Literal["missing", "malformed", "mismatch"]


def sign(secret: bytes, body: bytes) -> str:
    """The header value Labelbox sends for `body` (for `GET /models`, `body` is b"")."""
    return PREFIX + hmac.new(secret, msg=body, digestmod=hashlib.sha1).hexdigest()


def _candidate(header: str | None) -> tuple[bytes, bool]:
    """The header as fixed-length bytes, and whether it had the right length at all."""
    if header is None:
        return _FILLER, False
    # Non-ASCII cannot match a hex digest; "replace" keeps the length logic total.
    raw = header.encode("utf-8", "replace")
    if len(raw) != SIGNATURE_LENGTH:
        return _FILLER, False
    return raw, True


def verify(secrets: Sequence[bytes], body: bytes, header: str | None) -> bool:
    """True when `header` is the signature of `body` under any of `secrets`."""
    candidate, right_length = _candidate(header)
    matched = False
    for secret in secrets or (_NO_SECRET,):
        expected = sign(secret, body).encode("ascii")
        matched |= hmac.compare_digest(expected, candidate)
    return matched and right_length and bool(secrets)


def failure_reason(header: str | None) -> FailureReason:
    """Why a signature failed, for metrics only (never part of the answer)."""
    if header is None or not header.strip():
        return "missing"
    if _WELL_FORMED.fullmatch(header) is None:
        return "malformed"
    return "mismatch"
