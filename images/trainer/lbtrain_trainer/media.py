"""Fetch the media of the export's data rows into the workspace.

Labelbox exports reference media by URL (signed storage URLs, fetched without auth), or hold
text inline. Only ``http(s)://`` and ``data:`` are read: any other URI (``gs://`` and ``s3://``
from delegated-access buckets, ``file://``) is a broken row whose error names the URI, never
text to train on (a ``gs://`` text row used to be trained on as its own 30-character URL).
Errors name the URL without its query (signed URLs carry their signature there).

The export stage downloads every row's media once, so training never touches the network.
Images are stored as they came when training can read them as they are, else decoded and
pre-shrunk to the longest side the model can use (:mod:`lbtrain_trainer.imagestore`; boxes
stay in original pixels, so the original size is kept); text is stored as UTF-8. A row whose
media is missing or undecodable is recorded as broken with the reason;
:mod:`lbtrain_trainer.prepare` turns that into a bad-input error naming the rows, while a server
that keeps failing (5xx, timeouts) is a transient error and fails the stage.

The rows stream through: ``download_concurrency`` threads take them one by one as they read
the export (:class:`_Rows`), each with its own keep-alive connection
(:mod:`lbtrain_trainer.fetcher`), and record each row in the on-disk index
(:mod:`lbtrain_trainer.media_index`) as it finishes, so memory does not grow with the number of
rows and a restarted container keeps what an earlier attempt stored. At most one image per CPU
is decoded at a time (the rest wait with their bytes), which bounds memory for large photos
without idling a core. Progress goes to the log every few seconds
(:mod:`lbtrain_trainer.progress`).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lbtrain_trainer.cpus import cpu_quota
from lbtrain_trainer.fetcher import BrokenMediaError, Fetcher, TransientMediaError, redact_url
from lbtrain_trainer.imagestore import store_image
from lbtrain_trainer.media_index import MediaEntry, MediaIndex
from lbtrain_trainer.progress import ProgressReporter

__all__ = [
    "BrokenMediaError",
    "MediaEntry",
    "MediaIndex",
    "MediaSummary",
    "TransientMediaError",
    "download_all",
    "is_reference",
]

log = logging.getLogger(__name__)

URL_SCHEMES = ("http://", "https://", "data:")
# Rows read from the export at a time, by the download thread that finds none left (see _Rows).
ROWS_PER_READ = 2048
URI_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Why a URI the trainer does not read is not read, by scheme (anything else: the generic one).
UNREAD_SCHEMES = {
    "gs": "a Google Cloud Storage URI (IAM delegated access): the trainer has no GCS "
    "credentials; serve the data rows through signed https:// URLs",
    "s3": "an Amazon S3 URI: the trainer has no S3 credentials; serve the data rows "
    "through signed https:// URLs",
    "file": "a file:// URL: refused, it would read the trainer's own disk",
}
UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class MediaSummary:
    fetched: int
    kept: int  # stored by an earlier attempt in the same workspace
    broken: int
    bytes: int
    seconds: float


def is_reference(row_data: str) -> bool:
    return row_data.startswith(URL_SCHEMES)


def unreadable_uri(row_data: str) -> str | None:
    """Why ``row_data``, a URI the trainer does not read, cannot be used (None: it is a URL
    the fetcher reads, or inline text)."""
    if is_reference(row_data) or not URI_LIKE.match(row_data):
        return None
    scheme = row_data.split(":", 1)[0].lower()
    return UNREAD_SCHEMES.get(
        scheme, f"a {scheme}:// URI: the trainer reads only http(s):// and data: URLs"
    )


def media_error(row_data: str, exc: BaseException) -> str:
    """A broken row's error: what went wrong, and the URL (without its query) it came from."""
    if URI_LIKE.match(row_data) or row_data.startswith("data:"):
        return f"{exc} ({redact_url(row_data)})"[:400]
    return str(exc)[:400]


def file_stem(data_row_id: str) -> str:
    """A file name (without suffix) for a data row: readable, safe, and unique."""
    safe = UNSAFE_IN_NAMES.sub("_", data_row_id[:80])
    digest = hashlib.sha256(data_row_id.encode()).hexdigest()[:8]
    return f"{safe}-{digest}"


def store_text(data: bytes, target: Path) -> None:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BrokenMediaError(f"text is not UTF-8: {exc}") from exc
    # Byte-faithful: "\r\n" stays two characters, as Labelbox counts entity offsets.
    target.write_text(text, encoding="utf-8", newline="")


def read_media_text(path: Path) -> str:
    """A stored text as Labelbox counts it: no newline translation (``Path.read_text`` would
    turn "\r\n" into "\n" and shift every entity after it)."""
    with path.open(encoding="utf-8", newline="") as handle:
        return handle.read()


@dataclass
class _Job:
    kind: str  # "image" or "text"
    media_dir: Path
    max_side: int
    fetcher: Fetcher
    decode_slots: threading.BoundedSemaphore

    def fetch_one(self, data_row_id: str, row_data: str) -> tuple[MediaEntry, int]:
        """Fetch and store one row's media; returns its entry and the bytes downloaded."""
        if not row_data:
            return MediaEntry(error="data row has no row_data"), 0
        unread = unreadable_uri(row_data)
        if unread is not None:
            raise BrokenMediaError(f"row_data is {unread}")
        stem = file_stem(data_row_id)
        if self.kind == "text":
            name = stem + ".txt"
            data = self.fetcher.get(row_data) if is_reference(row_data) else row_data.encode()
            store_text(data, self.media_dir / name)
            return MediaEntry(path=name), len(data)
        if not is_reference(row_data):
            return MediaEntry(error="row_data is not a URL"), 0
        data = self.fetcher.get(row_data)
        name, width, height = store_image(
            data, self.media_dir / stem, self.max_side, self.decode_slots
        )
        return MediaEntry(path=name, width=width, height=height), len(data)


def _reusable(entry: MediaEntry | None, media_dir: Path) -> bool:
    return bool(entry and entry.error is None and entry.path and (media_dir / entry.path).exists())


class _Rows:
    """The rows still to fetch, shared by the download threads: each takes the next itself.

    Why not a queue fed by the main thread: with 16 download threads holding the GIL in turn,
    the feeding thread got too few turns to keep the queue full, and threads sat in
    ``Queue.get`` (py-spy: 8% of their time, a server that closes every connection). A lock
    around the row iterator hands each thread its next row at once.

    Why ``ROWS_PER_READ`` at a time: reading a row from the export (the SDK's objects, the row
    written to the export file, its parse) costs 110-160 µs of CPU while 15 other threads
    download, two to three times its ~50 µs alone: every thread's socket call hands the GIL
    around. The thread that finds the batch empty reads the next one under the lock while the
    others finish the file they hold and then wait on it, so the reading runs nearly alone
    (media step, 8,000 PNGs from a server that closes every connection: 680-760 µs of CPU per
    file against 770-860 row by row, the same as reading every row first). Memory stays
    bounded by the batch: rows are ``(id, row_data)`` pairs.
    """

    def __init__(
        self, items: Iterable[tuple[str, str]], index: MediaIndex, media_dir: Path
    ) -> None:
        self._items = iter(items)
        self._batch: collections.deque[tuple[str, str]] = collections.deque()
        self._lock = threading.Lock()
        self._index = index
        self._media_dir = media_dir
        self._earlier = len(index) > 0  # a fresh workspace has nothing to look up
        self.stop = threading.Event()

    def take(self, progress: ProgressReporter) -> tuple[str, str] | None:
        """The next row to fetch (rows an earlier attempt stored are counted and skipped), or
        None when there are no more or the download was stopped."""
        with self._lock:
            while not self.stop.is_set():
                if not self._batch:
                    self._batch.extend(itertools.islice(self._items, ROWS_PER_READ))
                    if not self._batch:
                        return None
                item = self._batch.popleft()
                if self._earlier and _reusable(self._index.get(item[0]), self._media_dir):
                    progress.add(kept=1)
                    continue
                return item
            return None


def download_all(
    items: Iterable[tuple[str, str]],
    kind: str,
    media_dir: Path,
    *,
    max_side: int,
    concurrency: int,
    total: int | None = None,
    allow_loopback: bool = False,
) -> MediaSummary:
    """Fetch ``(data_row_id, row_data)`` media; ``kind`` is "image" or "text".
    ``allow_loopback`` lets the fetcher reach loopback and link-local addresses (test servers).

    Rows already fetched by an earlier attempt (same workspace) are kept. Broken media are
    recorded per row; a transient failure that survives the retries is raised (after the rows
    in flight finish), and so is an error reading the rows. ``total`` (the number of items, if
    known) gives the progress an ETA.
    """
    fetcher = Fetcher(allow_loopback=allow_loopback)
    failures: list[BaseException] = []
    progress = ProgressReporter(total, log)
    with MediaIndex(media_dir) as index:
        rows = _Rows(items, index, media_dir)
        job = _Job(kind, media_dir, max_side, fetcher, threading.BoundedSemaphore(cpu_quota()))

        def worker() -> None:
            while True:
                try:
                    item = rows.take(progress)
                except BaseException as exc:  # the rows cannot be read (Labelbox, a bad row): fail
                    failures.append(exc)
                    rows.stop.set()
                    return
                if item is None:
                    return
                row_id, row_data = item
                try:
                    entry, nbytes = job.fetch_one(row_id, row_data)
                except BrokenMediaError as exc:
                    entry, nbytes = MediaEntry(error=media_error(row_data, exc)), 0
                except BaseException as exc:  # transient, or a bug: fail the stage
                    failures.append(exc)
                    rows.stop.set()
                    return
                index.put(row_id, entry)
                broken = entry.error is not None
                progress.add(fetched=int(not broken), broken=int(broken), nbytes=nbytes)

        threads = [
            threading.Thread(target=worker, name=f"media-{n}", daemon=True)
            for n in range(max(1, concurrency))
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.5)  # in slices: SIGTERM's exception lands here at once
        except BaseException:
            # SIGTERM: stop taking rows; the threads end after the downloads in flight, which
            # the stage does not wait for.
            rows.stop.set()
            raise
        fetcher.close()
        if failures:
            raise failures[0]
        snap = progress.finish()
    return MediaSummary(snap.fetched, snap.kept, snap.broken, snap.bytes, snap.elapsed_s)
