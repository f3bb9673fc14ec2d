"""Structured JSON logs for every lbtrain process. Every line about a model run carries its id.

Handlers set the context once (`with log_context(model_run_id=...)`); every logger made with
`get_logger` adds it to each record, so both the JSON output and pytest's `caplog` see it.
Anything shaped like a signature is masked before it is written. The webhook writes no stack
traces (only the exception's type and message); the operator keeps them for its handler
failures, which are bugs to read at 3 a.m.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

import orjson

_CONTEXT: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("lbtrain_log", default=())
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)
_SIGNATURE_LIKE = re.compile(r"sha1=[0-9A-Fa-f]{6,}")


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add `fields` (None values skipped) to every log record written inside the block."""
    merged = dict(_CONTEXT.get())
    merged.update({k: v for k, v in fields.items() if v is not None})
    token = _CONTEXT.set(tuple(merged.items()))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def context_fields() -> dict[str, str]:
    return dict(_CONTEXT.get())


class ContextLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that merges the current `log_context` into each record's attributes."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**dict(_CONTEXT.get()), **(kwargs.get("extra") or {})}
        return msg, kwargs


def get_logger(name: str) -> ContextLogger:
    return ContextLogger(logging.getLogger(name), {})


def mask(text: str) -> str:
    """Mask anything that looks like an `X-Hub-Signature` value."""
    return _SIGNATURE_LIKE.sub("sha1=<redacted>", text) if "sha1=" in text else text


def _noise(key: str) -> bool:
    """Extras never worth a field: private ones, and kopf's settings and object references."""
    return key[0] == "_" or key == "settings" or key.startswith("k8s_")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's extra fields."""

    _second = -1
    _prefix = ""

    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # strftime once per second, not once per line
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not _noise(key):
                doc[key] = mask(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            doc["exception"] = mask(f"{type(exc).__name__}: {exc}")[:500]
            if self.tracebacks:
                doc["traceback"] = mask(self.formatException(record.exc_info))
        # orjson: the webhook writes a line per POST, and json.dumps was most of its cost. What
        # orjson refuses (a non-str key, an int beyond 64 bits, a lone surrogate) the json
        # module writes as it always did.
        try:
            return orjson.dumps(doc, default=str).decode()
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            return json.dumps(doc, default=str, ensure_ascii=False)


def configure_logging(
    level: str = "INFO", stream: TextIO | None = None, *, tracebacks: bool = False
) -> None:
    """Send every logger's records, as JSON lines, to `stream` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(tracebacks=tracebacks))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Fields these JSON lines never show; skipping them makes each record much cheaper (see
    # "Optimization" in the logging HOWTO). This configures the whole process, as the CLI does.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # aiohttp's access log is replaced by our own request line (no headers, no query strings).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
