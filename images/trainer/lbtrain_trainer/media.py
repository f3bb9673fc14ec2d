"""Fetch the media of the export's data rows into the workspace.

Labelbox exports reference media by URL (signed storage URLs, fetched without auth), or hold
text inline; what one row's media is, and how it is read and stored, is
:mod:`lbtrain_trainer.media_row`. This module decides which rows are fetched, by whom, and
records what became of each.

The export stage downloads every row's media once, so training never touches the network.
Images are stored as they came when training can read them as they are, else decoded and
pre-shrunk to the longest side the model can use (:mod:`lbtrain_trainer.imagestore`; boxes
stay in original pixels, so the original size is kept); text is stored as UTF-8. A row whose
media is missing or undecodable is recorded as broken with the reason;
:mod:`lbtrain_trainer.prepare` turns that into a bad-input error naming the rows, while a server
that keeps failing (5xx, timeouts) is a transient error and fails the stage.

The rows stream through: ``download_concurrency`` threads take them as the export is read
(:class:`_Rows`), each with its own keep-alive connection (:mod:`lbtrain_trainer.fetcher`), and
each row is recorded in the on-disk index (:mod:`lbtrain_trainer.media_index`) as it finishes,
so memory does not grow with the number of rows and a restarted container keeps what an earlier
attempt stored. With more than one CPU, image downloads run in download processes (one per CPU,
:mod:`lbtrain_trainer.media_processes`) that share the threads, while this process reads the
rows and keeps the index: one process's threads are bound by its GIL. At most one image per CPU
is decoded at a time (the rest wait with their bytes), which bounds memory for large photos
without idling a core. Progress goes to the log every few seconds
(:mod:`lbtrain_trainer.progress`).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lbtrain_trainer.cpus import cpu_quota
from lbtrain_trainer.fetcher import BrokenMediaError, Fetcher, TransientMediaError
from lbtrain_trainer.media_index import MediaEntry, MediaIndex
from lbtrain_trainer.media_processes import (
    WorkerConfig,
    download_in_processes,
    processes_for,
    split_threads,
)
from lbtrain_trainer.media_row import (
    RowFetch,
    file_stem,
    is_reference,
    media_error,
    read_media_text,
    store_text,
    unreadable_uri,
)
from lbtrain_trainer.progress import ProgressReporter

__all__ = [
    "BrokenMediaError",
    "MediaEntry",
    "MediaIndex",
    "MediaSummary",
    "TransientMediaError",
    "download_all",
    "file_stem",
    "is_reference",
    "media_error",
    "read_media_text",
    "store_text",
    "unreadable_uri",
]

log = logging.getLogger(__name__)

# Rows read from the export at a time, by the download thread that finds none left (see _Rows).
ROWS_PER_READ = 2048


@dataclass(frozen=True)
class MediaSummary:
    fetched: int
    kept: int  # stored by an earlier attempt in the same workspace
    broken: int
    bytes: int
    seconds: float


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
    processes: int | None = None,
) -> MediaSummary:
    """Fetch ``(data_row_id, row_data)`` media; ``kind`` is "image" or "text".
    ``allow_loopback`` lets the fetcher reach loopback and link-local addresses (test servers).
    ``processes``: how many download processes share the ``concurrency`` threads (None: one
    per CPU, :func:`lbtrain_trainer.media_processes.processes_for`; images only, see there).

    Rows already fetched by an earlier attempt (same workspace) are kept. Broken media are
    recorded per row; a transient failure that survives the retries is raised (after the rows
    in flight finish), and so is an error reading the rows. ``total`` (the number of items, if
    known) gives the progress an ETA.
    """
    cpus = cpu_quota()
    if processes is None:
        processes = processes_for(concurrency, cpus) if kind == "image" else 1
    progress = ProgressReporter(total, log)
    with MediaIndex(media_dir) as index:
        rows = _Rows(items, index, media_dir)

        def record(row_id: str, entry: MediaEntry, nbytes: int) -> None:
            index.put(row_id, entry)
            broken = entry.error is not None
            progress.add(fetched=int(not broken), broken=int(broken), nbytes=nbytes)

        if processes > 1:
            configs = [
                WorkerConfig(
                    kind,
                    str(media_dir),
                    max_side,
                    threads,
                    max(1, cpus // processes),
                    allow_loopback,
                )
                for threads in split_threads(concurrency, processes)
            ]
            download_in_processes(lambda: rows.take(progress), record, configs)
        else:
            job = RowFetch(
                kind,
                media_dir,
                max_side,
                Fetcher(allow_loopback=allow_loopback),
                threading.BoundedSemaphore(cpus),
            )
            _download_in_threads(rows, job, record, progress, concurrency)
        snap = progress.finish()
    return MediaSummary(snap.fetched, snap.kept, snap.broken, snap.bytes, snap.elapsed_s)


def _download_in_threads(
    rows: _Rows,
    job: RowFetch,
    record: Callable[[str, MediaEntry, int], None],
    progress: ProgressReporter,
    concurrency: int,
) -> None:
    """Download the rows in ``concurrency`` threads of this process."""
    failures: list[BaseException] = []

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
                entry, nbytes = job.outcome(row_id, row_data)
            except BaseException as exc:  # transient, or a bug: fail the stage
                failures.append(exc)
                rows.stop.set()
                return
            record(row_id, entry, nbytes)

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
    job.fetcher.close()
    if failures:
        raise failures[0]
