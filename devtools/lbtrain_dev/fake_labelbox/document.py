"""Just enough GraphQL parsing to answer the Labelbox SDK the way a real server would.

The SDK builds its query texts from its ORM (field lists change between releases) and parses
replies strictly: ``DbObject`` raises ``KeyError`` for any selected field missing from the reply.
Rather than hard-code each selection, the fake reads the document: it routes on the *root fields*
(``modelRun``, ``updateTrainingPipeline``, ...) and shapes each resolver's plain dict to exactly
the selected fields, filling the ones it knows nothing about with ``null``. Arguments are kept as
raw text; resolvers pick the few values they need with :func:`argument`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(
    r'\s+|,|#[^\n]*|(?P<string>"(?:\\.|[^"\\])*")|(?P<spread>\.\.\.)'
    r"|(?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<name>[_A-Za-z][_0-9A-Za-z]*)"
    r"|(?P<punct>[{}()\[\]:$!=@])|(?P<other>[^\s])"
)


class DocumentError(ValueError):
    """The query text is not a GraphQL document this fake can read."""


@dataclass(frozen=True)
class FieldNode:
    """One selected field: its name, response key, raw argument text and sub-selection."""

    name: str
    alias: str | None
    args: str
    children: tuple[FieldNode, ...] | None

    @property
    def key(self) -> str:
        return self.alias or self.name

    def child(self, name: str) -> FieldNode | None:
        for node in self.children or ():
            if node.name == name:
                return node
        return None


@dataclass(frozen=True)
class Operation:
    kind: str
    name: str | None
    fields: tuple[FieldNode, ...]


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    for match in _TOKEN.finditer(text):
        token = match.group("string") or match.group("spread") or match.group("number")
        token = token or match.group("name")
        token = token or match.group("punct") or match.group("other")
        if token:
            out.append(token)
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise DocumentError("unexpected end of document")
        self.pos += 1
        return token

    def expect(self, token: str) -> None:
        got = self.take()
        if got != token:
            raise DocumentError(f"expected {token!r}, got {got!r}")

    def balanced(self, open_: str, close: str) -> str:
        """Consume a bracketed group (the opener is next) and return its inner text."""
        self.expect(open_)
        depth, inner = 1, list[str]()
        while True:
            token = self.take()
            depth += (token == open_) - (token == close)
            if depth == 0:
                return " ".join(inner)
            inner.append(token)

    def operation(self) -> Operation:
        kind, name = "query", None
        if self.peek() in ("query", "mutation", "subscription"):
            kind = self.take()
            if self.peek() not in ("{", "(", "@", None):
                name = self.take()
            if self.peek() == "(":
                self.balanced("(", ")")
            self.directives()
        return Operation(kind=kind, name=name, fields=self.selection_set())

    def directives(self) -> None:
        while self.peek() == "@":
            self.take()
            self.take()
            if self.peek() == "(":
                self.balanced("(", ")")

    def selection_set(self) -> tuple[FieldNode, ...]:
        self.expect("{")
        fields: list[FieldNode] = []
        while self.peek() != "}":
            if self.peek() == "...":
                self.take()
                if self.peek() == "on":  # inline fragment: merge its fields
                    self.take()
                    self.take()
                    self.directives()
                    fields.extend(self.selection_set())
                else:  # named fragment spreads are not supported: skip the name
                    self.take()
                    self.directives()
                continue
            fields.append(self.field())
        self.take()
        return tuple(fields)

    def field(self) -> FieldNode:
        name, alias = self.take(), None
        if self.peek() == ":":
            self.take()
            alias, name = name, self.take()
        args = self.balanced("(", ")") if self.peek() == "(" else ""
        self.directives()
        children = self.selection_set() if self.peek() == "{" else None
        return FieldNode(name=name, alias=alias, args=args, children=children)


def parse(text: str) -> Operation:
    """Parse the first operation of a document (the SDK always sends exactly one)."""
    if not text.strip():
        raise DocumentError("empty query")
    try:
        return _Parser(text).operation()
    except IndexError as exc:  # pragma: no cover - defensive
        raise DocumentError(str(exc)) from exc


def argument(node: FieldNode, name: str, variables: dict[str, Any]) -> Any:
    """The value of the first ``name: value`` pair in the field's arguments, at any depth.

    ``value`` may be a variable (``$modelRunId``), a string or a number/enum literal. Good enough
    for the SDK's documents, which pass ids as ``where: {id: $param_0}`` or ``id : $modelRunId``.
    """
    match = re.search(
        rf"(?<![_0-9A-Za-z]){re.escape(name)} :\s*(\$ [_A-Za-z]\w*|\"(?:\\.|[^\"\\])*\"|[-\w.]+)",
        node.args,
    )
    if match is None:
        return None
    raw = match.group(1)
    if raw.startswith("$"):
        return variables.get(raw[1:].strip())
    if raw.startswith('"'):
        return json.loads(raw)
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def shape(value: Any, children: tuple[FieldNode, ...] | None) -> Any:
    """Project a resolver's value onto the selection: every selected key, nothing else."""
    if children is None or value is None:
        return value
    if isinstance(value, list):
        return [shape(item, children) for item in value]
    if not isinstance(value, dict):
        return value
    return {node.key: shape(value.get(node.name), node.children) for node in children}
