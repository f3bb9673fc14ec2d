"""The prepared-data bundle of a multi-pod run: what it holds, how it is published, checked
and unpacked (:mod:`lbtrain_trainer.shared_prepare` decides who does which, and when).

:data:`BUNDLE` is one uncompressed tar of what ``train`` reads, no more:
``hyperparameters.json``, ``splits.json``, ``features.json``, ``export-summary.json``,
``prepared/`` and ``media/`` without its index (which only export and prepare use). It is
streamed to the destination as it is made, and :data:`MARKER`, written last, holds its key,
size and sha256. A reader streams it into a staging folder while hashing it and moves the
files into the workspace only when size and sha256 match the marker, so the workspace never
holds the tar and its contents at once and a torn or tampered bundle leaves it untouched.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from lbtrain_trainer import artifacts
from lbtrain_trainer.media_index import INDEX_NAME
from lbtrain_trainer.workspace import Workspace

log = logging.getLogger(__name__)

BUNDLE: Final = "prepared/bundle.tar"
MARKER: Final = "prepared/READY.json"
FORMAT: Final = 1
CHUNK: Final = 2**20

# Why a published bundle is not used (paired: the reason, and its message).
NO_MARKER: Final = "NoMarker"
MSG_NO_MARKER: Final = "no prepared data published yet"
UNREADABLE: Final = "UnreadableMarker"
MSG_UNREADABLE: Final = "the marker is not one this trainer writes"
OTHER_RUN: Final = "OtherRun"
MSG_OTHER_RUN: Final = "the published data is another run's (or other settings')"
NO_BUNDLE: Final = "NoBundle"
MSG_NO_BUNDLE: Final = "the marker is there but the bundle is not"
SIZE_MISMATCH: Final = "SizeMismatch"
MSG_SIZE_MISMATCH: Final = "the bundle has {got} bytes, the marker says {want}"
SHA_MISMATCH: Final = "ShaMismatch"
MSG_SHA_MISMATCH: Final = "the bundle's sha256 is {got}, the marker says {want}"


@dataclass(frozen=True)
class Problem:
    """Why a published bundle is not used: a reason above and its message."""

    reason: str
    message: str


def bundle_key(run_uid: str, model_run_id: str, model_type: str, hp: Mapping[str, Any]) -> str:
    """What a bundle must have been made for to be reused: the same ModelRun (its uid: a
    retry has it, a new ModelRun has another), model run, type and operator hyperparameters."""
    doc = {
        "run_uid": run_uid,
        "model_run_id": model_run_id,
        "model_type": model_type,
        "hyperparameters": dict(hp),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def parse_marker(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def marker_problem(marker: Mapping[str, Any] | None, key: str) -> Problem | None:
    """None when ``marker`` announces a bundle of ``key``; else why not."""
    if marker is None:
        return Problem(NO_MARKER, MSG_NO_MARKER)
    size, sha = marker.get("size"), marker.get("sha256")
    if marker.get("format") != FORMAT or not isinstance(size, int) or not isinstance(sha, str):
        return Problem(UNREADABLE, MSG_UNREADABLE)
    if marker.get("key") != key:
        return Problem(OTHER_RUN, MSG_OTHER_RUN)
    return None


def bundle_problem(marker: Mapping[str, Any], size: int, sha256: str) -> Problem | None:
    """None when the downloaded bundle is the one the marker describes."""
    if size != marker["size"]:
        return Problem(SIZE_MISMATCH, MSG_SIZE_MISMATCH.format(got=size, want=marker["size"]))
    if sha256 != marker["sha256"]:
        return Problem(SHA_MISMATCH, MSG_SHA_MISMATCH.format(got=sha256, want=marker["sha256"]))
    return None


def bundle_members(ws: Workspace) -> list[tuple[Path, str]]:
    """(file, name in the bundle) of everything ``train`` reads, sorted: the export stage's
    files, ``prepared/`` (the dataset, the tokenizer, the summaries) and the fetched media
    (their index is export's and prepare's, which the other pods skip)."""
    singles = [
        ws.hyperparameters_file,
        ws.splits_file,
        ws.features_file,
        ws.export_summary_file,
    ]
    files = [p for p in singles if p.is_file()]
    for folder in (ws.prepared_dir, ws.media_dir):
        if folder.is_dir():
            files += [
                p
                for p in folder.rglob("*")
                if p.is_file()
                and not p.name.startswith(INDEX_NAME)
                and not p.name.endswith(".partial")
            ]
    return sorted(((p, p.relative_to(ws.root).as_posix()) for p in files), key=lambda m: m[1])


class _Hashing(io.RawIOBase):
    """A write-only file that counts and hashes what passes through to ``out``."""

    def __init__(self, out: IO[bytes]) -> None:
        super().__init__()
        self._out = out
        self.size = 0
        self._sha = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._sha.update(view)
        self.size += len(view)
        self._out.write(view)
        return len(view)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def publish(
    ws: Workspace, dest: artifacts.Destination, key: str, model_run_id: str
) -> dict[str, Any]:
    """Upload the workspace's prepared state as :data:`BUNDLE`, then :data:`MARKER`. An older
    marker goes first, so no pod takes a bundle that is being replaced."""
    dest.remove(MARKER)
    members = bundle_members(ws)
    with dest.open_write(BUNDLE) as out:
        hashing = _Hashing(out)
        with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path, name in members:
                tar.add(path, arcname=name, recursive=False)
    marker = {
        "format": FORMAT,
        "key": key,
        "model_run_id": model_run_id,
        "bundle": BUNDLE,
        "files": len(members),
        "size": hashing.size,
        "sha256": hashing.hexdigest(),
    }
    dest.write_bytes(MARKER, json.dumps(marker).encode())
    log.info(
        "published the prepared data for the other pods and retries: %s (%d files, %d bytes)",
        dest.shown(BUNDLE),
        len(members),
        hashing.size,
    )
    return marker


class _Reading(io.RawIOBase):
    """A read-only stream that counts and hashes what is read from ``src``."""

    def __init__(self, src: IO[bytes]) -> None:
        super().__init__()
        self._src = src
        self.size = 0
        self._sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._src.read(len(view))
        view[: len(data)] = data
        self._sha.update(data)
        self.size += len(data)
        return len(data)

    def drain(self) -> None:
        """Read what the tar reader left (its end blocks), so the whole object is hashed."""
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def _unpack(tar: tarfile.TarFile, staging: Path) -> None:
    """Unpack a streamed tar's regular files and folders under ``staging``, refusing anything
    else: an absolute name, a ``..``, a link or a device (a tampered bundle could otherwise
    write outside the workspace). By hand rather than ``extractall(filter="data")``: the trainer
    image's Python (Debian 12's 3.11.2) predates that argument (3.11.4)."""
    for member in tar:
        parts = Path(member.name).parts
        if not parts or Path(member.name).is_absolute() or ".." in parts:
            raise tarfile.TarError(f"bundle member {member.name!r} is outside the workspace")
        target = staging.joinpath(*parts)
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if not member.isfile():
            raise tarfile.TarError(f"bundle member {member.name!r} is not a regular file")
        source = tar.extractfile(member)
        if source is None:  # a regular file always has a reader; be explicit for mypy
            raise tarfile.TarError(f"bundle member {member.name!r} cannot be read")
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            shutil.copyfileobj(source, out, CHUNK)


def _move_into(staging: Path, root: Path) -> None:
    """Move what was unpacked into the workspace (renames: the same filesystem)."""
    for entry in sorted(staging.rglob("*")):
        if entry.is_dir():
            continue
        target = root / entry.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        entry.replace(target)


def try_fetch(
    ws: Workspace, dest: artifacts.Destination, key: str
) -> tuple[dict[str, Any] | None, Problem | None]:
    """Unpack the published bundle into ``ws`` if there is a valid one of this run:
    (its marker, None); else (None, why not), leaving the workspace as it was (an
    ``emptyDir`` may have a size limit: the tar is never stored beside its contents)."""
    marker = parse_marker(dest.read_bytes(MARKER))
    problem = marker_problem(marker, key)
    if problem is not None or marker is None:
        return None, problem
    staging = ws.scratch_dir / "bundle"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with dest.open_read(BUNDLE) as src:
            if src is None:
                return None, Problem(NO_BUNDLE, MSG_NO_BUNDLE)
            reading = _Reading(src)
            try:
                with tarfile.open(fileobj=reading, mode="r|") as tar:
                    _unpack(tar, staging)
                reading.drain()
            except (tarfile.TarError, EOFError) as exc:  # torn or tampered: the marker says
                reading.drain()
                problem = bundle_problem(marker, reading.size, reading.hexdigest())
                if problem is None:  # the very bundle pod 0 published, and it does not unpack
                    raise
                log.debug("the bundle did not unpack: %s", exc)
        problem = bundle_problem(marker, reading.size, reading.hexdigest())
        if problem is not None:
            return None, problem
        _move_into(staging, ws.root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ws.bundle_marker_file.write_text(json.dumps(marker))
    return marker, None
