"""The artifact destination: a local path (a mounted volume) or any fsspec URI.

Weights and checkpoints outlive the pod: the workspace is an ``emptyDir`` that an evicted pod
loses, so resuming needs checkpoints at the artifact destination. A local path needs nothing;
``s3://``, ``gs://`` and the like work when ``fsspec`` (and its backend) is installed. Writes
are atomic on local disks (write, then rename), so a pod killed mid-write never leaves a
truncated checkpoint that the next attempt would trust.

Every file stays inside the destination: a relative name that climbs out (``..``) is refused
(:func:`lbtrain.destination.join`), and on a local disk so is a folder that a symlink leads
elsewhere. The destination itself was checked against its root when the settings were read.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from lbtrain import destination
from lbtrain_trainer.errors import ConfigError, DestinationEscapesError


class Destination:
    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.local: Path | None = None
        if "://" not in uri or uri.startswith("file://"):
            self.local = Path(uri.removeprefix("file://"))
            self.fs = None
        else:
            try:
                fsspec = importlib.import_module("fsspec")
            except ImportError as exc:
                raise ConfigError(f"artifact destination {uri} needs fsspec installed") from exc
            self.fs, _ = fsspec.core.url_to_fs(uri)

    def path(self, relative: str) -> str:
        try:
            base = str(self.local) if self.local is not None else self.uri
            return destination.join(base, relative)
        except destination.DestinationEscapes as exc:
            raise DestinationEscapesError(str(exc)) from None

    def write_bytes(self, relative: str, data: bytes) -> str:
        target = self.path(relative)
        if self.local is not None:
            path = Path(target)
            # Checked before the folders are made: an existing symlink is followed here.
            if not path.parent.resolve().is_relative_to(self.local.resolve()):
                raise DestinationEscapesError(
                    f"artifact destination {self.uri!r} is refused: {relative!r} leads outside "
                    "it through a symbolic link"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            with partial.open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            partial.replace(path)
        else:
            assert self.fs is not None
            with self.fs.open(target, "wb") as out:
                out.write(data)
        return target

    def read_bytes(self, relative: str) -> bytes | None:
        target = self.path(relative)
        if self.local is not None:
            path = Path(target)
            return path.read_bytes() if path.exists() else None
        assert self.fs is not None
        if not self.fs.exists(target):
            return None
        with self.fs.open(target, "rb") as handle:
            data: bytes = handle.read()
            return data
