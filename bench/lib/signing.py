"""Signed requests as Labelbox sends them: ``X-Hub-Signature: sha1=<HMAC-SHA1(secret, body)>``.

The benches sign with the webhook's own `sign`, so a change to the signature cannot leave a
bench sending requests the webhook refuses (see docs/labelbox.md, "The webhook").
"""

from __future__ import annotations

from lbtrain_webhook.signature import SIGNATURE_HEADER, sign


def signature(secret: str, body: bytes = b"") -> str:
    """The header value for `body` (``GET /models`` signs the empty body)."""
    return sign(secret.encode(), body)


def signed_headers(secret: str, body: bytes = b"") -> dict[str, str]:
    """The headers of a signed JSON request."""
    return {SIGNATURE_HEADER: signature(secret, body), "Content-Type": "application/json"}


def signed_header_lines(secret: str, body: bytes = b"") -> str:
    """The same headers as raw HTTP/1.1 header lines, for the webhook bench's own client."""
    return "".join(f"{k}: {v}\r\n" for k, v in signed_headers(secret, body).items())
