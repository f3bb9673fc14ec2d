"""The export's image downloads in download processes (``media_processes``), against a real
HTTP server on loopback: the same outcomes as the stage's own threads, failures that fail the
stage, and no process left behind however the download ends."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from lbtrain_dev.media_server import MediaServer
from lbtrain_trainer import media
from lbtrain_trainer.errors import BadInputError
from lbtrain_trainer.hyperparams import resolve_hyperparameters
from lbtrain_trainer.media_processes import processes_for, split_threads

pytest.importorskip("PIL")
from PIL import Image


def _png(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24 + index % 7, 16), (index % 256, 40, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def _children() -> list[int]:
    """This process's live download processes (from /proc: their parent pid is ours and their
    command line names the module; a test session has children of its own too)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ours = int(fields[1]) == os.getpid() and fields[0] != "Z"
        if ours and b"lbtrain_trainer.media_processes" in cmdline:
            found.append(int(entry.name))
    return found


def _download(
    items: Iterable[tuple[str, str]], media_dir: Path, processes: int = 2
) -> media.MediaSummary:
    """The export's image download of ``items``: 4 threads over ``processes`` processes."""
    return media.download_all(
        items,
        "image",
        media_dir,
        max_side=1024,
        concurrency=4,
        processes=processes,
        allow_loopback=True,
    )


@pytest.fixture
def server() -> Iterator[MediaServer]:
    with MediaServer.running() as running:
        yield running


def test_one_process_per_cpu_each_with_enough_threads():
    assert processes_for(16, 2) == 2
    assert processes_for(16, 1) == 1  # one CPU: the stage's own threads
    assert processes_for(16, 64) == 4  # at least 4 threads a process
    assert processes_for(64, 64) == 8  # at most 8 processes
    assert processes_for(7, 8) == 1
    assert split_threads(16, 3) == [6, 5, 5]
    assert split_threads(2, 4) == [1, 1, 1, 1]


def test_processes_store_what_the_threads_store(server, tmp_path):
    pngs = [_png(i) for i in range(60)]
    items = [(f"dr-{i}", server.add(f"p/{i}.png", png, "image/png")) for i, png in enumerate(pngs)]
    gone = server.url("gone.png")
    items += [("dr-gone", gone), ("dr-text", "not a url"), ("dr-empty", "")]
    ids = [row_id for row_id, _ in items]
    outcomes = {}
    for processes in (1, 2):
        media_dir = tmp_path / str(processes)
        summary = _download(items, media_dir, processes)
        assert (summary.fetched, summary.broken, summary.kept) == (60, 3, 0)
        assert summary.bytes == sum(len(png) for png in pngs)
        with media.MediaIndex(media_dir) as index:
            entries = [index.get(row_id) for row_id in ids]
        for png, entry in zip(pngs, entries, strict=False):
            assert entry is not None and entry.error is None
            assert (media_dir / str(entry.path)).read_bytes() == png
        outcomes[processes] = entries
    assert outcomes[1] == outcomes[2]  # paths, sizes and errors alike
    assert outcomes[2][60] == media.MediaEntry(error=f"HTTP 404 ({gone})")
    assert _children() == []


def test_rows_an_earlier_attempt_stored_are_not_sent_to_the_processes(server, tmp_path):
    items = [(f"dr-{i}", server.add(f"k/{i}.png", _png(i), "image/png")) for i in range(40)]
    _download(items[:25], tmp_path)
    again = _download(items, tmp_path)
    assert (again.fetched, again.kept) == (15, 25)
    assert server.requests == 40


def test_a_server_that_keeps_failing_fails_the_stage_from_a_process(server, tmp_path):
    items = [(f"dr-{i}", server.add(f"f/{i}.png", _png(i), "image/png")) for i in range(10)]
    server.fail("f/3.png", times=100, status=502)
    with pytest.raises(media.TransientMediaError, match="HTTP 502"):
        _download(items, tmp_path)
    with media.MediaIndex(tmp_path) as index:
        assert index.get("dr-3") is None  # not recorded: the next attempt fetches it
    assert _children() == []


def test_rows_that_cannot_be_read_stop_the_processes(server, tmp_path):
    url = server.add("r.png", _png(1), "image/png")

    def rows() -> Iterator[tuple[str, str]]:
        for i in range(200):
            yield f"dr-{i}", url
        raise RuntimeError("Labelbox export failed halfway")

    with pytest.raises(RuntimeError, match="halfway"):
        _download(rows(), tmp_path)
    assert _children() == []


# The stage reads rows 2,048 at a time (media.ROWS_PER_READ): row 5 is read before any row is
# sent, row 3,000 once the first 2,048 went to the processes.
@pytest.mark.parametrize("kill_at", [5, 3000], ids=["before-its-first-rows", "mid-run"])
def test_a_download_process_that_dies_fails_the_stage_as_transient(server, tmp_path, kill_at):
    url = server.add("d.png", _png(2), "image/png")

    def rows() -> Iterator[tuple[str, str]]:
        for i in range(6000):
            if i == kill_at:  # as the OOM killer would
                os.kill(_children()[0], signal.SIGKILL)
            yield f"dr-{i}", url

    with pytest.raises(media.TransientMediaError, match="exit code -9"):
        _download(rows(), tmp_path)
    # The stage stopped when the process died (the other finished the rows it held), not after
    # downloading every row.
    assert server.requests < 3000
    assert _children() == []


def test_download_processes_is_a_hyperparameter_checked_before_any_download():
    hp, ignored = resolve_hyperparameters(
        "image_single_classification", {"download_processes": "1"}, {"download_processes": 3}
    )
    assert (hp.download_processes, ignored) == (3, [])  # the model run's config wins
    assert resolve_hyperparameters("image_single_classification", {})[0].download_processes == 0
    with pytest.raises(BadInputError, match="download_processes must be >= 0"):
        resolve_hyperparameters("image_single_classification", {"download_processes": -1})
