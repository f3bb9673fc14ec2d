"""Keeping credentials out of messages about the artifact destination.

A probe or write failure ends up in the termination message, the ModelRun's status, the
Labelbox run's error and the logs: all read by people who must not learn the bucket's keys.
Backends quote what they were given, so every message about a destination passes through
:func:`redact`: a URI's user info (``s3://KEY:SECRET@bucket``), signed-URL query parameters, and
the values of credential variables in the environment are replaced by ``***``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final

MASK: Final = "***"
# Environment variables whose values are secrets, by a word in their name.
SECRET_NAME: Final = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)
# Shorter values are too likely to be ordinary words ("1", "true") to mask everywhere.
MIN_SECRET_LENGTH: Final = 6
_USERINFO: Final = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_SIGNED_QUERY: Final = re.compile(
    r"(?P<name>X-Amz-(?:Credential|Signature|Security-Token)|X-Goog-(?:Credential|Signature)"
    r"|AWSAccessKeyId|Signature|access_token|secret|key)=[^&\s\"']+",
    re.IGNORECASE,
)


def redact_uri(uri: str) -> str:
    """``uri`` without user info or signed-query credentials."""
    uri = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", uri)
    return _SIGNED_QUERY.sub(lambda m: f"{m['name']}={MASK}", uri)


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """The values of credential variables, longest first (so a value containing another is
    masked whole)."""
    found = {
        value
        for name, value in environ.items()
        if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LENGTH
    }
    return sorted(found, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every credential it may quote replaced by ``***``."""
    text = redact_uri(text)
    for value in secret_values(os.environ if environ is None else environ):
        text = text.replace(value, MASK)
    return text
