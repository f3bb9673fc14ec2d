"""The media index: for each data row, the file holding its media and the original image size,
or why its media is broken.

It is an SQLite table in the media directory (``media/index.sqlite``), keyed by data row id.
The export writes an entry per row as its download finishes (in any order), a restarted export
container asks per row whether an earlier attempt already stored it, and ``prepare`` looks every
row up: an on-disk table does all three with memory flat in the number of rows. (The index was a
JSON dict held whole and written at the end: 100k rows were all in memory at once, and a crash
lost every entry.) Entries are committed in batches, at least every second (at most
:data:`COMMIT_EVERY_ROWS` wait in memory): a crash loses at most that batch, and those rows are
fetched again. An ``index.json`` left by an older trainer is not read: a workspace lives as long
as one pod, and its rows are simply fetched again.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

INDEX_NAME = "index.sqlite"
COMMIT_EVERY_S = 1.0
COMMIT_EVERY_ROWS = 2000


@dataclass(frozen=True)
class MediaEntry:
    path: str | None = None  # relative to the media directory
    width: int | None = None  # original size (images)
    height: int | None = None
    error: str | None = None


class MediaIndex:
    """Thread-safe; use as a context manager (commits and closes on exit)."""

    def __init__(self, media_dir: Path) -> None:
        media_dir.mkdir(parents=True, exist_ok=True)
        self.path = media_dir / INDEX_NAME
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS media (row_id TEXT PRIMARY KEY, path TEXT,"
            " width INTEGER, height INTEGER, error TEXT) WITHOUT ROWID"
        )
        self._pending: dict[str, MediaEntry] = {}
        self._last_commit = time.monotonic()

    def get(self, row_id: str) -> MediaEntry | None:
        with self._lock:
            pending = self._pending.get(row_id)
            if pending is not None:
                return pending
            found = self._db.execute(
                "SELECT path, width, height, error FROM media WHERE row_id = ?", (row_id,)
            ).fetchone()
        return None if found is None else MediaEntry(*found)

    def put(self, row_id: str, entry: MediaEntry) -> None:
        """Record a row (replacing an earlier entry). Entries wait in memory and go to the
        table together (one ``executemany`` a batch: an SQL statement per row cost a tenth of a
        small file's download, under a lock all the download threads take)."""
        with self._lock:
            self._pending[row_id] = entry
            now = time.monotonic()
            if len(self._pending) >= COMMIT_EVERY_ROWS or now - self._last_commit >= COMMIT_EVERY_S:
                self._commit_locked(now)

    def _commit_locked(self, now: float) -> None:
        if self._pending:
            rows = [(r, e.path, e.width, e.height, e.error) for r, e in self._pending.items()]
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO media VALUES (?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
            self._pending.clear()
        self._last_commit = now

    def commit(self) -> None:
        with self._lock:
            self._commit_locked(time.monotonic())

    def broken(self) -> int:
        with self._lock:
            self._commit_locked(time.monotonic())  # count the rows still waiting too
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM media WHERE error IS NOT NULL"
            ).fetchone()
        return int(count)

    def __len__(self) -> int:
        with self._lock:
            self._commit_locked(time.monotonic())
            (count,) = self._db.execute("SELECT COUNT(*) FROM media").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._commit_locked(time.monotonic())
            self._db.close()

    def __enter__(self) -> MediaIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
