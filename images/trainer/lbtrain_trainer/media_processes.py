"""Download processes: the image downloads of the export stage on more than one core.

Why: a download thread holds the GIL for the Python of each file (the request, the answer's
headers, the image header sniff) and hands it over at every system call. With 16 threads in one
process the stage is bound by that one lock and its hand-offs, not by the CPUs: from a server
that closes every connection (a connection, and so several more system calls, per file), 8,000
small PNGs on 2 cores took 0.74-0.80 of a plain ``urllib`` fetch in one process of 16 threads
and 0.80-0.92 in two processes of 8 (``bench/README.md``, "export"). A pod with more CPUs
gains more.

How: :func:`processes_for` gives one process per CPU of the container's quota, each with at
least :data:`MIN_THREADS_PER_PROCESS` of the ``download_concurrency`` threads (the
``download_processes`` hyperparameter overrides it); with one, the stage downloads in its own
threads and starts nothing (:mod:`lbtrain_trainer.media`). Each
process is ``python -m lbtrain_trainer.media_processes CONFIG``: its threads fetch and store rows
exactly as the stage's own would (:class:`lbtrain_trainer.media_row.RowFetch`). The stage keeps
everything else: it reads the export's rows, skips what an earlier attempt stored, writes the
media index and logs progress. Rows go to a process as JSON lines on its stdin,
:data:`ROWS_PER_BATCH` at a time and at most two batches ahead (memory stays flat, and a slow
process gets fewer rows); outcomes come back as JSON lines on its stdout. A process flushes its
outcomes before it waits for rows, so the two never wait on each other. Its stderr is the
stage's (a bug's traceback lands in the container log).

Failures: a broken row is an outcome like any other. A transient failure (or a bug) ends the
process with a last line that names it: the stage stops sending rows, lets the other processes
finish what they hold, and raises :class:`TransientMediaError` (or ``RuntimeError``). A process
that dies without a word (killed for memory) is a transient failure too. When the stage itself
stops (SIGTERM, the rows cannot be read), the processes are killed; rows they held are simply
fetched again by the next attempt.

Text rows stay in the stage's threads: they are mostly inline, and sending the text through a
pipe to have another process write it costs more than writing it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import selectors
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from lbtrain_trainer.fetcher import Fetcher, TransientMediaError
from lbtrain_trainer.media_index import MediaEntry
from lbtrain_trainer.media_row import RowFetch

MIN_THREADS_PER_PROCESS = 4
MAX_PROCESSES = 8
# At most two batches held: their outcomes (errors of 400 characters at most) fit in a 64 kB
# pipe, so a process never blocks writing them while the stage blocks sending it rows.
ROWS_PER_BATCH = 32
RESULTS_PER_WRITE = 16
RESULT_WRITE_EVERY_S = 0.25
SELECT_S = 0.5  # the stage's wait for outcomes: short, so SIGTERM's exception lands at once
KILL_WAIT_S = 5.0

Row = tuple[str, str]  # (data row id, row data)


def processes_for(concurrency: int, cpus: int) -> int:
    """How many download processes share ``concurrency`` downloads on ``cpus`` CPUs: one per
    CPU, each with at least :data:`MIN_THREADS_PER_PROCESS` threads, at most
    :data:`MAX_PROCESSES`. 1 means the stage's own threads (no process is started)."""
    return max(1, min(cpus, concurrency // MIN_THREADS_PER_PROCESS, MAX_PROCESSES))


def split_threads(concurrency: int, processes: int) -> list[int]:
    """``concurrency`` threads over ``processes`` processes, as evenly as they divide."""
    base, extra = divmod(max(concurrency, processes), processes)
    return [base + (1 if n < extra else 0) for n in range(processes)]


@dataclass(frozen=True)
class WorkerConfig:
    """What a download process is told on its command line."""

    kind: str
    media_dir: str
    max_side: int
    threads: int
    decode_slots: int
    allow_loopback: bool


def outcome(row_id: str, entry: MediaEntry, nbytes: int) -> list[Any]:
    """One row's outcome as it travels back to the stage (:func:`read_outcome` reverses it)."""
    return [row_id, entry.path, entry.width, entry.height, entry.error, nbytes]


def read_outcome(item: list[Any]) -> tuple[str, MediaEntry, int]:
    row_id, path, width, height, error, nbytes = item
    return str(row_id), MediaEntry(path, width, height, error), int(nbytes)


def failure_from(message: dict[str, Any]) -> Exception:
    """The exception the stage raises for a process's last line ``{"failed": ...}``."""
    text = str(message.get("failed", "a download process failed"))
    if message.get("transient"):
        return TransientMediaError(text)
    return RuntimeError(f"a download process failed: {text}")


# --- the stage's side -----------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    """The stage's environment, with its import path: the process imports what the stage does."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


class _Process:
    """The stage's handle on one download process."""

    def __init__(self, config: WorkerConfig) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, json.dumps(asdict(config))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_child_env(),
        )
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.stdin: IO[bytes] | None = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout
        self.held = 0  # rows sent and not yet answered
        self.ended = False  # its stdout reached the end
        self.refused = False  # it was dead when rows were sent to it
        self._partial = b""

    def send(self, rows: list[Row]) -> None:
        """Hand ``rows`` to the process; a process that has died takes none (its exit status
        then fails the stage, and the rows are fetched by the next attempt)."""
        assert self.stdin is not None
        try:
            self.stdin.write(json.dumps(rows).encode() + b"\n")
            self.stdin.flush()
        except BrokenPipeError:
            self.stdin = None
            self.refused = True
            return
        self.held += len(rows)

    def died(self) -> TransientMediaError:
        """The error for a process whose output ended before it answered every row."""
        try:
            code: int | str = self.proc.wait(timeout=KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            code = "unknown (still running)"
        unfinished = f", {self.held} rows unfinished" if self.held else ""
        return TransientMediaError(
            f"a download process ended with exit code {code}{unfinished} (killed for memory?)"
        )

    def close_stdin(self) -> None:
        """No more rows: the process finishes those it holds and exits."""
        if self.stdin is not None:
            with contextlib.suppress(BrokenPipeError):  # it ended: its exit status says why
                self.stdin.close()
            self.stdin = None

    def messages(self, data: bytes) -> list[Any]:
        """The complete lines in what was read (the rest waits for the next read)."""
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [json.loads(line) for line in lines if line]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def reap(self) -> int:
        self.close_stdin()
        try:
            return self.proc.wait(timeout=KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.stdout.close()


def download_in_processes(
    take: Callable[[], Row | None],
    record: Callable[[str, MediaEntry, int], None],
    configs: list[WorkerConfig],
) -> None:
    """Download the rows ``take`` gives (None: no more) in one process per config; ``record``
    each outcome as it comes. Raises what a process failed with (after the others finished
    the rows they held); kills the processes when anything else ends it (SIGTERM, ``take``
    raising)."""
    processes = [_Process(config) for config in configs]
    failure: Exception | None = None
    try:
        with selectors.DefaultSelector() as selector:
            for process in processes:
                selector.register(process.stdout, selectors.EVENT_READ, process)
            more_rows = True
            while not all(p.ended for p in processes):
                if more_rows and failure is None:
                    more_rows = _feed(processes, take)
                    if not more_rows:
                        for process in processes:
                            process.close_stdin()
                for key, _ in selector.select(SELECT_S):
                    process = key.data
                    data = os.read(process.stdout.fileno(), 1 << 16)
                    if not data:
                        process.ended = True
                        selector.unregister(process.stdout)
                        unfinished = process.held or process.stdin or process.refused
                        if unfinished and failure is None:
                            failure = process.died()  # stop at once, not after every row
                            for other in processes:
                                other.close_stdin()
                        continue
                    for message in process.messages(data):
                        if isinstance(message, dict):
                            failure = failure or failure_from(message)
                            for other in processes:
                                other.close_stdin()
                            continue
                        for item in message:
                            record(*read_outcome(item))
                            process.held -= 1
        for process in processes:
            if process.reap() != 0 and failure is None:
                failure = process.died()
    except BaseException:
        for process in processes:
            process.kill()
        for process in processes:
            process.reap()
        raise
    if failure is not None:
        raise failure


def _feed(processes: list[_Process], take: Callable[[], Row | None]) -> bool:
    """Top every process up to two batches of rows; False once the rows ran out."""
    for process in processes:
        if process.stdin is None:
            continue
        while process.stdin is not None and process.held <= ROWS_PER_BATCH:
            batch: list[Row] = []
            while len(batch) < ROWS_PER_BATCH:
                row = take()
                if row is None:
                    if batch:
                        process.send(batch)
                    return False
                batch.append(row)
            process.send(batch)
    return True


# --- the download process's side ------------------------------------------------------------


class _Inbox:
    """Rows from stdin, taken by the download threads one at a time."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._rows: collections.deque[Row] = collections.deque()
        self._lock = threading.Lock()
        self._ended = False

    def take(self, before_waiting: Callable[[], None]) -> Row | None:
        with self._lock:
            while not self._rows:
                if self._ended:
                    return None
                before_waiting()  # the stage sends rows as outcomes come back
                line = self._stream.readline()
                if not line:
                    self._ended = True
                    return None
                self._rows.extend((str(r[0]), str(r[1])) for r in json.loads(line))
            return self._rows.popleft()


class _Outbox:
    """Outcomes to stdout, :data:`RESULTS_PER_WRITE` a line (sooner if they wait long)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._pending: list[list[Any]] = []
        self._lock = threading.Lock()
        self._last = time.monotonic()

    def put(self, item: list[Any]) -> None:
        with self._lock:
            self._pending.append(item)
            now = time.monotonic()
            if len(self._pending) >= RESULTS_PER_WRITE or now - self._last >= RESULT_WRITE_EVERY_S:
                self._write_locked(now)

    def flush(self) -> None:
        with self._lock:
            self._write_locked(time.monotonic())

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            self._write_locked(time.monotonic())
            message = {
                "failed": f"{type(exc).__name__}: {exc}"[:1000],
                "transient": isinstance(exc, TransientMediaError),
            }
            self._stream.write(json.dumps(message).encode() + b"\n")
            self._stream.flush()

    def _write_locked(self, now: float) -> None:
        if self._pending:
            self._stream.write(json.dumps(self._pending).encode() + b"\n")
            self._stream.flush()
            self._pending.clear()
        self._last = now


def worker_main(argv: list[str]) -> int:
    """A download process: fetch the rows from stdin, answer their outcomes on stdout."""
    config = WorkerConfig(**json.loads(argv[0]))
    fetcher = Fetcher(allow_loopback=config.allow_loopback)
    job = RowFetch(
        config.kind,
        Path(config.media_dir),
        config.max_side,
        fetcher,
        threading.BoundedSemaphore(config.decode_slots),
    )
    # The outcomes get stdout's pipe to themselves: anything else printed goes to stderr (the
    # container log) instead of into the stage's messages.
    outcomes = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    inbox, outbox = _Inbox(sys.stdin.buffer), _Outbox(outcomes)
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        while not stop.is_set():
            row = inbox.take(outbox.flush)
            if row is None:
                return
            row_id, row_data = row
            try:
                entry, nbytes = job.outcome(row_id, row_data)
            except BaseException as exc:  # transient, or a bug: the stage fails
                if not isinstance(exc, TransientMediaError):
                    traceback.print_exc()
                failures.append(exc)
                stop.set()
                return
            outbox.put(outcome(row_id, entry, nbytes))

    threads = [
        threading.Thread(target=run, name=f"media-{n}", daemon=True) for n in range(config.threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fetcher.close()
    if failures:
        outbox.fail(failures[0])
        return 1
    outbox.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(worker_main(sys.argv[1:]))
