"""Export and prepare once per run of several pods; the other pods, and every retry, reuse it.

A run of M pods is one Indexed Job whose every pod runs the ``export`` and ``prepare`` init
containers: without this module, M exports of the same rows from Labelbox (M times the API
calls, the media downloads and the split write-back), and a retried attempt (a new Job) does it
all again. Kubeflow Trainer answers this with a dataset initializer that fills a shared volume
before the trainers start. lbtrain's pods already share the artifact destination (admission
refuses a multi-pod run whose destination is not shared), so pod index 0 is the initializer:

- **Pod 0** exports and prepares as a one-pod run does, then publishes everything ``train``
  reads as one bundle to the destination, and last a marker with the bundle's size and sha256.
- **Pods 1..M-1** never call Labelbox: their ``export`` waits for the marker (polling, logging
  what it waits for; pod 0's failure fails the Job, and SIGTERM ends the wait at once), then
  downloads the bundle, checks it against the marker and unpacks it into the workspace; their
  ``prepare`` finds the workspace prepared and does nothing but report it.
- **A retry**: pod 0's ``export`` finds a valid bundle of this run and unpacks it instead of
  exporting. A marker that is missing, another run's, or whose bundle's size or sha256 differ
  (a torn upload, a tampered file) is not used: pod 0 exports again and overwrites it.

Layout under the destination: :data:`BUNDLE` (a tar of ``hyperparameters.json``,
``splits.json``, ``features.json``, ``export-summary.json``, ``prepared/`` and ``media/``
without its index: what ``train`` reads, no more) and :data:`MARKER`. The marker's key is a
hash of the ModelRun's uid, the model run id, the model type and the operator's
hyperparameters, so a retry of the same ModelRun matches and another run sharing the
destination never does. A run of one pod (no completion index, or one node) keeps exactly
the stages it had: nothing is published.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from lbtrain_trainer import artifacts
from lbtrain_trainer.media_index import INDEX_NAME
from lbtrain_trainer.redact import redact
from lbtrain_trainer.settings import Settings
from lbtrain_trainer.workspace import Workspace

log = logging.getLogger(__name__)

BUNDLE: Final = "prepared/bundle.tar"
MARKER: Final = "prepared/READY.json"
FORMAT: Final = 1
POLL_S: Final = 3.0  # how often a waiting pod looks for the marker
LOG_EVERY_S: Final = 30.0  # how often it says it still waits (and at every change of reason)
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
READ_FAILED: Final = "ReadFailed"
MSG_READ_FAILED: Final = "reading it failed ({error}); trying again"
SIZE_MISMATCH: Final = "SizeMismatch"
MSG_SIZE_MISMATCH: Final = "the bundle has {got} bytes, the marker says {want}"
SHA_MISMATCH: Final = "ShaMismatch"
MSG_SHA_MISMATCH: Final = "the bundle's sha256 is {got}, the marker says {want}"


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


@dataclass(frozen=True)
class Role:
    """This pod's place in a run of several pods."""

    index: int
    nodes: int

    @property
    def leader(self) -> bool:
        """Pod 0 exports, prepares and publishes."""
        return self.index == 0


def role_of(num_nodes: int, completion_index: int | None) -> Role | None:
    """None for a run of one pod (the stages run as they always did)."""
    if num_nodes <= 1 or completion_index is None:
        return None
    return Role(completion_index, num_nodes)


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


def settings_key(settings: Settings) -> str:
    return bundle_key(
        settings.run_uid, settings.model_run_id, settings.model_type, settings.hyperparameters
    )


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


def publish(settings: Settings, ws: Workspace, dest: artifacts.Destination) -> dict[str, Any]:
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
        "key": settings_key(settings),
        "model_run_id": settings.model_run_id,
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


def _move_into(staging: Path, root: Path) -> None:
    """Move what was unpacked into the workspace (renames: the same filesystem)."""
    for entry in sorted(staging.rglob("*")):
        if entry.is_dir():
            continue
        target = root / entry.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        entry.replace(target)


def try_fetch(
    settings: Settings, ws: Workspace, dest: artifacts.Destination
) -> tuple[dict[str, Any] | None, Problem | None]:
    """Unpack the published bundle into ``ws`` if there is a valid one of this run:
    (its marker, None); else (None, why not), leaving the workspace as it was.

    The bundle streams into a staging folder while it is hashed, and its files move into the
    workspace only once size and sha256 match the marker: the workspace never holds the tar
    and its contents at once (an ``emptyDir`` may have a size limit)."""
    marker = parse_marker(dest.read_bytes(MARKER))
    problem = marker_problem(marker, settings_key(settings))
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
                    tar.extractall(staging, filter="data")
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


def wait_for_bundle(
    settings: Settings,
    ws: Workspace,
    dest: artifacts.Destination,
    role: Role,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until pod 0's bundle is published and unpacked here. No timeout: pod 0's failure
    fails the whole Job, whose pods the kubelet then stops (SIGTERM ends the sleep). A failed
    read is logged and tried again: the wait may last the whole export, and a destination that
    stays unreadable fails pod 0, and with it the Job, anyway."""
    started = clock()
    said: tuple[str, float] | None = None
    while True:
        try:
            marker, problem = try_fetch(settings, ws, dest)
        except Exception as exc:  # the store's hiccup: pod 0 fails the Job if it lasts
            marker, problem = None, Problem(READ_FAILED, MSG_READ_FAILED.format(error=exc))
        if marker is not None:
            return marker
        assert problem is not None
        now = clock()
        if said is None or said[0] != problem.reason or now - said[1] >= LOG_EVERY_S:
            log.info(
                "pod %d of %d: waiting for pod 0 to publish the prepared data at %s: %s "
                "(%.0fs so far)",
                role.index,
                role.nodes,
                dest.shown(MARKER),
                redact(problem.message),
                now - started,
            )
            said = (problem.reason, now)
        sleep(POLL_S)


def reuse_for_export(settings: Settings, ws: Workspace) -> dict[str, Any] | None:
    """The export stage's summary when this pod takes the published bundle instead of
    exporting; None when it exports as usual (one pod, or pod 0 finding nothing usable)."""
    role = role_of(settings.num_nodes, settings.completion_index)
    if role is None:
        return None
    dest = artifacts.Destination(settings.artifact_destination)
    started = time.monotonic()
    if role.leader:
        marker, problem = try_fetch(settings, ws, dest)
        if marker is None:
            assert problem is not None
            ws.bundle_marker_file.unlink(missing_ok=True)  # this workspace is prepared anew
            log.info("pod 0: %s (%s): exporting from Labelbox", problem.message, dest.shown(MARKER))
            return None
        log.info("pod 0: reusing the data an earlier attempt prepared (%s)", dest.shown(BUNDLE))
    else:
        wait_for_bundle(settings, ws, dest, role)
        log.info("pod %d: unpacked pod 0's prepared data (%s)", role.index, dest.shown(BUNDLE))
    exported: dict[str, Any] = {}
    if ws.export_summary_file.is_file():
        exported = json.loads(ws.export_summary_file.read_text())
    return {
        **exported,
        "stage": "export",
        "reused": dest.shown(BUNDLE),
        "completion_index": role.index,
        "waited_s": round(time.monotonic() - started, 1),
    }


def exported(settings: Settings, ws: Workspace, summary: Mapping[str, Any]) -> None:
    """Keep the export stage's summary for the bundle (a pod that reuses it reports it)."""
    if role_of(settings.num_nodes, settings.completion_index) is not None:
        ws.export_summary_file.write_text(json.dumps(dict(summary)))


def reuse_for_prepare(settings: Settings, ws: Workspace) -> dict[str, Any] | None:
    """The prepare stage's summary when the workspace was unpacked from a bundle (nothing to
    do); None when it prepares as usual."""
    role = role_of(settings.num_nodes, settings.completion_index)
    if role is None or not ws.bundle_marker_file.is_file():
        return None
    prepared: dict[str, Any] = {}
    if ws.prepare_summary_file.is_file():
        prepared = json.loads(ws.prepare_summary_file.read_text())
    marker = json.loads(ws.bundle_marker_file.read_text())
    log.info("pod %d: the workspace holds pod 0's prepared data: nothing to prepare", role.index)
    return {**prepared, "stage": "prepare", "reused": marker.get("bundle", BUNDLE)}


def prepared(settings: Settings, ws: Workspace, summary: Mapping[str, Any]) -> None:
    """After pod 0 prepared: publish the bundle for the other pods and for retries."""
    role = role_of(settings.num_nodes, settings.completion_index)
    if role is None or not role.leader:
        return
    ws.prepare_summary_file.write_text(json.dumps(dict(summary)))
    publish(settings, ws, artifacts.Destination(settings.artifact_destination))
