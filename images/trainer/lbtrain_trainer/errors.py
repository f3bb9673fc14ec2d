"""Errors that decide the trainer's exit code.

The operator fails a run without retry on :data:`lbtrain.contract.EXIT_BAD_INPUT` and retries
every other non-zero exit. So the one thing an error must say is whether retrying can help:
:class:`BadInputError` means the data of the model run cannot train (the Labelbox user has to fix
labels or media), and it names the offending data rows so they can find them.
"""

from __future__ import annotations

from collections.abc import Iterable

from lbtrain.contract import EXIT_BAD_INPUT, EXIT_DESTINATION_ESCAPES, EXIT_DESTINATION_UNUSABLE

# How many row ids an error message lists before it says "and N more".
MAX_LISTED_ROWS = 10


def format_row_ids(row_ids: Iterable[str], limit: int = MAX_LISTED_ROWS) -> str:
    """Render row ids for a human: the first ``limit`` ids, then a count of the rest."""
    ids = list(dict.fromkeys(row_ids))
    shown = ", ".join(ids[:limit])
    if len(ids) > limit:
        shown += f" and {len(ids) - limit} more"
    return shown


class TrainerError(Exception):
    """Base class of the errors the CLI turns into an exit code and a termination message."""

    exit_code = 1


class BadInputError(TrainerError):
    """The model run's data cannot train; retrying will not help (exit 65)."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, row_ids: Iterable[str] = ()) -> None:
        self.row_ids = list(dict.fromkeys(row_ids))
        if self.row_ids:
            message = f"{message} (data rows: {format_row_ids(self.row_ids)})"
        super().__init__(message)


class ConfigError(TrainerError):
    """The trainer was started with a missing or invalid setting (exit 2, like a usage error)."""

    exit_code = 2


class DestinationEscapesError(TrainerError):
    """The artifact destination would leave its root (``lbtrain.destination``): a template or
    run to fix, never retried (exit 77). Raised before anything is written there."""

    exit_code = EXIT_DESTINATION_ESCAPES


class DestinationUnusableError(TrainerError):
    """The artifact destination cannot be written: no fsspec backend for its scheme, no such
    bucket, or refused credentials. Found by a probe before any expensive work; a template or
    Secret to fix, never retried (exit 78). Its message never holds a credential."""

    exit_code = EXIT_DESTINATION_UNUSABLE


class UploadError(TrainerError):
    """Labelbox rejected predictions or metrics: a trainer bug or an outage, retriable (exit 1)."""

    exit_code = 1


class UnknownModelTypeError(BadInputError, ConfigError):
    """The model type names no registered type (built in or from an installed plugin).

    It fails the stage with exit 65 and never falls through to another type: no retry can make
    the type known, and training some other model under its name would be worse than failing.
    It is also a :class:`ConfigError`, as the model type is a setting of the trainer."""

    exit_code = EXIT_BAD_INPUT


class PluginError(ConfigError):
    """A model type plugin is broken: it cannot be imported, is incomplete, or names a type
    another one already registered. The image must be fixed (exit 2)."""
