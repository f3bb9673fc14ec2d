"""Where a run's artifacts go, and the rule that keeps them there.

A TrainingTemplate names one destination for all its runs, such as ``/artifacts/{modelRunId}``
or ``s3://bucket/runs/{modelRunId}``; the operator fills in the run's id. Runs usually share the
volume or bucket behind it, so one run must never write where another's weights are. The part
before ``{modelRunId}`` is the destination's *root*, and a destination is *confined* when it lies
under that root. Confinement is checked lexically (no I/O) twice: where the operator builds the
Job, so a run that would escape fails at once and is never retried, and again in the trainer,
before it writes anything, because a pod can be started with any environment.

The rules, each for a reason:

- the id fills exactly one path segment: it cannot hold ``/`` or be ``.`` or ``..``;
- no segment of the destination is ``..`` (after expansion, so neither the template nor the id
  can climb out);
- the placeholder sits in the path, after a fixed root: ``s3://{modelRunId}/x`` would let the id
  pick the bucket, and a local root must be an absolute path, as a relative one would depend on
  the trainer's working folder;
- a destination without the placeholder is its own root: every run writes there (the template's
  author chose that), and only ``..`` is refused.

Labelbox ids (:mod:`lbtrain.ids`) can never break these rules; ModelRuns created before the CRD
enforced that rule, and templates, can.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Final

PLACEHOLDER: Final = "{modelRunId}"
DEFAULT: Final = "/workspace/artifacts"


class DestinationEscapes(ValueError):
    """The destination would leave its root (or has no root to stay in)."""

    def __init__(self, destination: str, root: str, why: str) -> None:
        self.destination, self.root, self.why = destination, root, why
        super().__init__(f"artifact destination {destination!r} is refused: {why}")


@dataclass(frozen=True)
class Expanded:
    """A run's artifact destination and the root it must stay under."""

    destination: str
    root: str


def _split(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``s3://bucket``, ``/a/b``); a local path -> ("", path)."""
    if uri.startswith("file://"):
        return "file://", uri.removeprefix("file://")
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return "", uri
    bucket, slash, path = rest.partition("/")
    return f"{scheme}://{bucket}", slash + path


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def root_of(template: str) -> str:
    """The fixed part of a destination template: everything up to the last ``/`` before the
    placeholder (the whole template when it has none), without a trailing ``/``."""
    prefix, path = _split(template)
    if PLACEHOLDER in prefix:  # the id would name the bucket or host: there is no fixed root
        return prefix.partition(PLACEHOLDER)[0]
    head, found, _ = path.partition(PLACEHOLDER)
    fixed = head[: head.rfind("/") + 1] if found else head
    if fixed.rstrip("/") or prefix:
        return prefix + fixed.rstrip("/")
    return "/" if fixed.startswith("/") else ""  # "/{modelRunId}": the whole disk


def check_confined(destination: str, root: str) -> None:
    """Raise :class:`DestinationEscapes` unless ``destination`` lies under ``root``."""
    prefix, path = _split(destination)
    root_prefix, root_path = _split(root)
    if not root or (not root_prefix and not root_path.startswith("/")):
        raise DestinationEscapes(
            destination, root, f"its root {root!r} is not an absolute path or a bucket URI"
        )
    if root_prefix.endswith("://") and root_prefix not in ("file://",):
        raise DestinationEscapes(destination, root, "the model run id would pick the bucket")
    segments, root_segments = _segments(path), _segments(root_path)
    if ".." in segments or ".." in root_segments:
        raise DestinationEscapes(destination, root, "it contains a '..' path segment")
    inside = segments[: len(root_segments)] == root_segments
    if prefix != root_prefix or not inside:
        raise DestinationEscapes(destination, root, f"it is not under its root {root!r}")


def expand(template: str | None, model_run_id: str) -> Expanded:
    """The destination of the run ``model_run_id`` from its template's, checked.

    Raises :class:`DestinationEscapes` when the result would leave the template's root.
    """
    template = template or DEFAULT
    root = root_of(template)
    if PLACEHOLDER in template and (
        "/" in model_run_id or model_run_id in ("", ".", "..") or "\x00" in model_run_id
    ):
        raise DestinationEscapes(
            template, root, f"the model run id {model_run_id[:64]!r} is not one path segment"
        )
    destination = template.replace(PLACEHOLDER, model_run_id)
    check_confined(destination, root)
    return Expanded(destination, root)


def join(destination: str, relative: str) -> str:
    """``destination``/``relative``, refusing a ``relative`` that would climb out of it."""
    if relative.startswith("/") or ".." in _segments(relative):
        raise DestinationEscapes(
            f"{destination}/{relative}", destination, "a file would be written outside it"
        )
    prefix, path = _split(destination)
    return prefix + posixpath.join(path, relative) if path else f"{destination}/{relative}"
