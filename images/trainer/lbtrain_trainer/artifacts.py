"""The artifact destination: a local path (a mounted volume) or any fsspec URI.

Weights and checkpoints outlive the pod: the workspace is an ``emptyDir`` that an evicted pod
loses, so resuming needs checkpoints at the artifact destination. A local path needs nothing;
``s3://`` and ``gs://`` need the image's ``objectstore`` extra (s3fs, gcsfs), and credentials and
endpoint from the standard environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL``; ``GOOGLE_APPLICATION_CREDENTIALS``), set by the template's env/envFrom.
Writes are atomic on local disks (write, then rename), so a pod killed mid-write never leaves a
truncated checkpoint that the next attempt would trust; an object store publishes an object
only when its upload completes, and a failed write is discarded, never committed.

:func:`open_checked` probes an object store (write and delete a small object) before a stage
does any expensive work: a missing backend, a missing bucket or refused credentials exit 78
(never retried, :class:`DestinationUnusableError`); an endpoint that does not answer is an
outage, exit 1, retried. No message carries a credential (:mod:`lbtrain_trainer.redact`).

Writes stream: a checkpoint of a BERT base with its optimizer is 1.3 GB, and handing it whole
to fsspec, whose buffer copies it, held it twice (an OOMKill at a 4Gi limit). ``open_write``
gives a file that ``torch.save`` writes into, and :meth:`Destination.write_bytes` hands the
store one block at a time, so the store holds a block or two, never a second copy.

Every file stays inside the destination: a relative name that climbs out (``..``) is refused
(:func:`lbtrain.destination.join`), and on a local disk so is a folder that a symlink leads
elsewhere. The destination itself was checked against its root when the settings were read.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

from lbtrain import destination
from lbtrain_trainer.errors import DestinationEscapesError, DestinationUnusableError, TrainerError
from lbtrain_trainer.redact import redact, redact_uri

log = logging.getLogger(__name__)

# What an object-store write hands fsspec at a time, and its upload part size: above S3's
# 5 MiB minimum part, a multiple of GCS's 256 KiB, small beside any checkpoint worth streaming.
BLOCK_SIZE = 8 * 2**20
PROBE_PREFIX = ".lbtrain-probe-"
# Backend errors that mean "fix the configuration", by class name, so that neither botocore
# nor google-auth (optional packages) is imported to recognise them.
_CONFIG_ERRORS = frozenset(
    {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError", "RefreshError"}
)


class BlockWriter(io.RawIOBase):
    """Hands an fsspec file at most :data:`BLOCK_SIZE` bytes per write. fsspec's write buffer
    copies whatever one ``write`` gives it before uploading, so ``torch.save`` writing a 94 MB
    embedding in one call would otherwise make a second 94 MB copy."""

    def __init__(self, out: Any) -> None:
        super().__init__()
        self._out = out

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), BLOCK_SIZE):
            self._out.write(view[start : start + BLOCK_SIZE])
        return len(view)

    def flush(self) -> None:  # the upload happens per block and at close, never on flush
        return None


class Destination:
    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.shown_uri = redact_uri(self.uri)
        self.local: Path | None = None
        self.fs: Any = None
        if "://" not in uri or uri.startswith("file://"):
            self.local = Path(uri.removeprefix("file://"))
            return
        scheme = uri.partition("://")[0]
        try:
            fsspec = importlib.import_module("fsspec")
            self.fs, _ = fsspec.core.url_to_fs(uri)
        except ImportError as exc:  # fsspec, or the scheme's backend (s3fs, gcsfs), is missing
            raise DestinationUnusableError(
                f"artifact destination {self.shown_uri} is unusable: no fsspec backend for "
                f"{scheme}:// is installed ({redact(str(exc))}); the trainer image's "
                "`objectstore` extra brings s3fs and gcsfs"
            ) from None
        except ValueError as exc:  # fsspec knows no such protocol
            raise DestinationUnusableError(
                f"artifact destination {self.shown_uri} is unusable: {redact(str(exc))}"
            ) from None

    def path(self, relative: str) -> str:
        try:
            base = str(self.local) if self.local is not None else self.uri
            return destination.join(base, relative)
        except destination.DestinationEscapes as exc:
            raise DestinationEscapesError(redact(str(exc))) from None

    def shown(self, relative: str) -> str:
        """Where ``relative`` lands, fit for a log or a termination message."""
        return redact_uri(self.path(relative))

    def _local_target(self, relative: str) -> Path:
        assert self.local is not None
        path = Path(self.path(relative))
        # Checked before the folders are made: an existing symlink is followed here.
        if not path.parent.resolve().is_relative_to(self.local.resolve()):
            raise DestinationEscapesError(
                f"artifact destination {self.uri!r} is refused: {relative!r} leads outside "
                "it through a symbolic link"
            )
        return path

    @contextlib.contextmanager
    def open_write(self, relative: str) -> Iterator[IO[bytes]]:
        """A binary file that becomes ``relative`` when the block ends without an error; on an
        error nothing is published (a local partial file is removed, an upload aborted)."""
        if self.local is not None:
            path = self._local_target(relative)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            try:
                with partial.open("wb") as out:
                    yield out
                    out.flush()
                    os.fsync(out.fileno())
                partial.replace(path)
            finally:
                partial.unlink(missing_ok=True)
            return
        out = self.fs.open(self.path(relative), "wb", block_size=BLOCK_SIZE)
        try:
            yield cast(IO[bytes], BlockWriter(out))  # torch.save needs only write()
        except BaseException:
            out.discard()  # aborts a multipart upload; close() would publish a torn object
            out.closed = True
            raise
        out.close()

    def write_bytes(self, relative: str, data: bytes | memoryview) -> str:
        """Write ``data`` as ``relative``, one block at a time; answers where it went (shown)."""
        view = memoryview(data).cast("B")
        with self.open_write(relative) as out:
            for start in range(0, len(view), BLOCK_SIZE):
                out.write(view[start : start + BLOCK_SIZE])
        return self.shown(relative)

    def read_bytes(self, relative: str) -> bytes | None:
        target = self.path(relative)
        if self.local is not None:
            path = Path(target)
            return path.read_bytes() if path.exists() else None
        self.fs.invalidate_cache(target)  # polled (a marker): an earlier listing must not hide it
        if not self.fs.exists(target):
            return None
        with self.fs.open(target, "rb") as handle:
            data: bytes = handle.read()
            return data

    @contextlib.contextmanager
    def open_read(self, relative: str) -> Iterator[IO[bytes] | None]:
        """``relative`` opened for streamed reading; None when it does not exist."""
        target = self.path(relative)
        if self.local is not None:
            path = Path(target)
            if not path.is_file():
                yield None
                return
            with path.open("rb") as handle:
                yield handle
            return
        self.fs.invalidate_cache(target)  # polled: a listing cached earlier must not hide it
        if not self.fs.exists(target):
            yield None
            return
        with self.fs.open(target, "rb", block_size=BLOCK_SIZE) as handle:
            yield cast(IO[bytes], handle)

    def remove(self, relative: str) -> None:
        """Delete ``relative`` if it exists."""
        target = self.path(relative)
        if self.local is not None:
            Path(target).unlink(missing_ok=True)
        elif self.fs.exists(target):
            self.fs.rm_file(target)

    def probe(self) -> None:
        """Write and delete a small object, so a destination that cannot take the weights fails
        the run now rather than after training. Local paths are mounted volumes: not probed."""
        if self.local is not None:
            return
        name = f"{PROBE_PREFIX}{secrets.token_hex(6)}"
        try:
            with self.fs.open(self.path(name), "wb") as out:
                out.write(b"lbtrain: can the trainer write here?\n")
            self.fs.rm_file(self.path(name))
        except Exception as exc:
            raise probe_failure(self.shown_uri, exc) from None
        log.info("artifact destination %s is writable", self.shown_uri)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of the store's answer behind ``exc``, if it answered: s3fs turns error
    codes it does not know (an S3-compatible server's own, such as an unknown access key's)
    into a bare OSError, whose cause is botocore's error with the response."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(status, int):
                return status
        code = getattr(seen, "code", None)  # gcsfs's HttpError
        if isinstance(code, int) and 400 <= code < 600:
            return code
        seen = seen.__cause__ or seen.__context__
    return None


def probe_failure(shown_uri: str, exc: BaseException) -> TrainerError:
    """The error a failed probe ends the stage with: 78 for a configuration to fix (no such
    bucket, refused or missing credentials), 1 for anything else (an endpoint that does not
    answer is retried). The message is redacted."""
    detail = redact(f"{type(exc).__name__}: {exc}")
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = http_status(exc)
    if isinstance(exc, FileNotFoundError):
        why = "its bucket does not exist"
    elif isinstance(exc, PermissionError):
        why = "the credentials were refused"
    elif names & _CONFIG_ERRORS:
        why = "no usable credentials were found"
    elif status in (401, 403, 404):  # an error code s3fs does not know (versitygw's own)
        why = f"the store refused the request (HTTP {status})"
    else:
        return TrainerError(
            f"artifact destination {shown_uri} did not answer a probe write (retried): {detail}"
        )
    return DestinationUnusableError(
        f"artifact destination {shown_uri} is unusable: {why} ({detail})"
    )


def open_checked(uri: str) -> Destination:
    """The destination at ``uri``, probed (see :meth:`Destination.probe`)."""
    found = Destination(uri)
    found.probe()
    return found
