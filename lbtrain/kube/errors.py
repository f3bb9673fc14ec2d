"""Errors from the API server, one class per status a caller reacts to differently."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """The API server answered with an error status; carries its reason and message."""

    def __init__(self, status: int, reason: str, message: str, body: dict[str, Any] | None = None):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}


class NotFound(ApiError):
    """404: the object (or its kind) does not exist."""


class Conflict(ApiError):
    """409: a stale resourceVersion or a concurrent change."""


class AlreadyExists(Conflict):
    """409 AlreadyExists: a create found an object of that name."""


class Invalid(ApiError):
    """422: the object failed validation (schema, CEL rules)."""


class Forbidden(ApiError):
    """403: RBAC refused the request."""


class ApiUnreachable(Exception):
    """The API server could not be reached at all (connection refused, DNS, TLS, timeout)."""


def error_for(status: int, body: dict[str, Any] | None, text: str) -> ApiError:
    """The exception for an error answer; `body` is the decoded `Status`, when there is one."""
    reason = str((body or {}).get("reason") or "")
    message = str((body or {}).get("message") or text[:500])
    if status == 404:
        return NotFound(status, reason or "NotFound", message, body)
    if status == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
        return cls(status, reason or "Conflict", message, body)
    if status == 422:
        return Invalid(status, reason or "Invalid", message, body)
    if status == 403:
        return Forbidden(status, reason or "Forbidden", message, body)
    return ApiError(status, reason or "Error", message, body)
