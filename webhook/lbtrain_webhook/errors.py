"""Error answers: always JSON `{"error": "<code>", "detail": "<what to fix>"}`, never a trace."""

from __future__ import annotations

import json

from aiohttp import web

# The `error` code for statuses that come from routing rather than from our handlers.
GENERIC_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    500: "internal",
    503: "unavailable",
}


class WebhookError(Exception):
    """An answer other than success, raised from pure code and turned into JSON by the app."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail


def unauthorized() -> WebhookError:
    """The one answer for an absent, malformed or wrong signature."""
    return WebhookError(
        401, "unauthorized", "missing or invalid X-Hub-Signature (sha1=<hex HMAC-SHA1 of the body>)"
    )


def error_response(status: int, error: str, detail: str) -> web.Response:
    body = json.dumps({"error": error, "detail": detail}, ensure_ascii=False)
    return web.Response(status=status, text=body, content_type="application/json")


def from_exception(exc: WebhookError) -> web.Response:
    return error_response(exc.status, exc.error, exc.detail)


def from_http_exception(exc: web.HTTPException) -> web.Response:
    """A routing answer (404, 405...) in the same JSON shape."""
    detail = exc.reason
    if isinstance(exc, web.HTTPMethodNotAllowed):
        detail = (
            f"method {exc.method} not allowed; allowed: {', '.join(sorted(exc.allowed_methods))}"
        )
    response = error_response(exc.status, GENERIC_CODES.get(exc.status, "error"), detail)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
    return response
