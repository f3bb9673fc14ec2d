"""GraphQL execution for the fake: parse the document, route root fields, build the envelope.

Routing is by root field (``modelRun``, ``updateTrainingPipeline``, ``task``, ...) rather than by
operation name: the SDK uses several operation names for one field (``GetModelRunPyApi`` and
``ModelRunPyApi`` both read ``modelRun``), and the field is the server's real contract. Errors
use the ``extensions.code`` values the SDK maps to its exceptions (docs/labelbox.md section 2.5).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lbtrain_dev.fake_labelbox.document import (
    DocumentError,
    FieldNode,
    Operation,
    parse,
    shape,
)
from lbtrain_dev.fake_labelbox.state import FakeState, ModelRunRecord

log = logging.getLogger(__name__)

RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
AUTHENTICATION_ERROR = "AUTHENTICATION_ERROR"
BAD_USER_INPUT = "BAD_USER_INPUT"
RESOURCE_CONFLICT = "RESOURCE_CONFLICT"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"


class GqlError(Exception):
    """A GraphQL error reply: ``{"data": null, "errors": [{..., "extensions": {"code"}}]}``."""

    def __init__(self, code: str, message: str, http_status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


@dataclass(frozen=True)
class Upload:
    """A file part of a GraphQL multipart request, substituted into the variables."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Context:
    state: FakeState
    variables: dict[str, Any]
    experimental: bool


Resolver = Callable[[Context, FieldNode], Any]


def error_body(code: str, message: str, path: list[str] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "extensions": {"code": code}}
    if path:
        error["path"] = path
    return {"data": None, "errors": [error]}


def require(value: Any, what: str) -> str:
    """A non-empty string argument, or the BAD_USER_INPUT error a real server would give."""
    if not isinstance(value, str) or not value:
        raise GqlError(BAD_USER_INPUT, f"{what} must be a non-empty string (got {value!r})")
    return value


def find_run(ctx: Context, model_run_id: Any) -> ModelRunRecord:
    """The model run, or the RESOURCE_NOT_FOUND error Labelbox answers for an unknown id."""
    run_id = require(model_run_id, "model run id")
    with ctx.state.lock:
        run = ctx.state.model_runs.get(run_id)
    if run is None:
        raise GqlError(RESOURCE_NOT_FOUND, f"Resource 'ModelRun' not found for id {run_id!r}")
    return run


def parse_operation(query: Any) -> Operation:
    if not isinstance(query, str):
        raise GqlError(GRAPHQL_PARSE_FAILED, "request has no 'query' string", http_status=400)
    try:
        return parse(query)
    except DocumentError as exc:
        raise GqlError(GRAPHQL_PARSE_FAILED, f"Syntax Error: {exc}", http_status=400) from exc


def execute(
    resolvers: Mapping[str, Resolver],
    ctx: Context,
    operation: Operation,
) -> tuple[int, dict[str, Any]]:
    """Resolve every root field; the first error fails the whole request (like the SDK sees it)."""
    data: dict[str, Any] = {}
    for node in operation.fields:
        resolver = resolvers.get(node.name)
        if resolver is None:
            log.warning("fake labelbox: unsupported root field %r (%s)", node.name, operation.name)
            kind = "Mutation" if operation.kind == "mutation" else "Query"
            return 400, error_body(
                GRAPHQL_VALIDATION_FAILED,
                f'Cannot query field "{node.name}" on type "{kind}" (not served by the fake).',
            )
        try:
            value = resolver(ctx, node)
        except GqlError as exc:
            return exc.http_status, error_body(exc.code, exc.message, [node.key])
        data[node.key] = shape(value, node.children)
    return 200, {"data": data}
