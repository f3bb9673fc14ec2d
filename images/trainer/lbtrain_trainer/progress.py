"""Progress of the media download, as log lines a person reads in ``kubectl logs -c export``.

The export of a large model run can take many minutes; a line at most every few seconds says
how far it is (rows handled out of the export's rows), how fast (files and bytes per second
since the start) and when it will end (ETA at the average rate so far), and a last line says
what happened in the end. :func:`format_progress` is a pure function of a
:class:`ProgressSnapshot`; :class:`ProgressReporter` counts (from any thread) and throttles.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

INTERVAL_S = 5.0


@dataclass(frozen=True)
class ProgressSnapshot:
    total: int | None  # rows to handle (None: unknown)
    fetched: int  # rows whose media were downloaded (or read inline) and stored
    kept: int  # rows already stored by an earlier attempt
    broken: int  # rows whose media are broken
    bytes: int  # bytes downloaded
    elapsed_s: float

    @property
    def done(self) -> int:
        return self.fetched + self.kept + self.broken


def human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def format_progress(snap: ProgressSnapshot, final: bool = False) -> str:
    """One line: rows done (of the total), downloads, rates, ETA (or the total time if final)."""
    elapsed = max(snap.elapsed_s, 1e-9)
    if snap.total:
        share = f" ({100 * snap.done / snap.total:.1f}%)"
        rows = f"{snap.done:,}/{snap.total:,} rows{share}"
    else:
        rows = f"{snap.done:,} rows"
    rate = snap.fetched / elapsed
    parts = [
        f"media: {rows}",
        f"{snap.fetched:,} fetched ({human_bytes(snap.bytes)}, {rate:,.0f} files/s, "
        f"{human_bytes(snap.bytes / elapsed)}/s)",
        f"{snap.kept:,} kept from an earlier attempt",
        f"{snap.broken:,} broken",
    ]
    if final:
        parts.append(f"done in {human_duration(snap.elapsed_s)}")
    else:
        parts.append(f"{human_duration(snap.elapsed_s)} elapsed")
        per_row = snap.elapsed_s / snap.done if snap.done else None
        if snap.total and per_row is not None:
            parts.append(f"ETA {human_duration(per_row * max(0, snap.total - snap.done))}")
        else:
            parts.append("ETA unknown")
    return ", ".join(parts)


class ProgressReporter:
    """Thread-safe counters that log :func:`format_progress` at most every ``interval_s``."""

    def __init__(
        self,
        total: int | None,
        log: logging.Logger,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.log = log
        self.interval_s = interval_s
        self.clock = clock
        self.started = clock()
        self._last = self.started
        self._lock = threading.Lock()
        self.fetched = self.kept = self.broken = self.bytes = 0

    def snapshot(self) -> ProgressSnapshot:
        return ProgressSnapshot(
            self.total,
            self.fetched,
            self.kept,
            self.broken,
            self.bytes,
            self.clock() - self.started,
        )

    def add(self, *, fetched: int = 0, kept: int = 0, broken: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.fetched += fetched
            self.kept += kept
            self.broken += broken
            self.bytes += nbytes
            now = self.clock()
            if now - self._last < self.interval_s:
                return
            self._last = now
            line = format_progress(self.snapshot())
        self.log.info("%s", line)

    def finish(self) -> ProgressSnapshot:
        with self._lock:
            snap = self.snapshot()
        self.log.info("%s", format_progress(snap, final=True))
        return snap
