"""The export's media download against a real keep-alive HTTP server on loopback: connections
reused, retries, broken rows, rows kept from an earlier attempt, images stored as they came or
shrunk, and the progress line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbtrain_dev.media_server import MediaServer
from lbtrain_trainer import media
from lbtrain_trainer.imagestore import looks_complete, plan_image, target_size
from lbtrain_trainer.manifest import ManifestWriter, PreparedDataset
from lbtrain_trainer.progress import ProgressReporter, ProgressSnapshot, format_progress

pytest.importorskip("PIL")
from PIL import Image


def _image(size: tuple[int, int], fmt: str, color: tuple[int, int, int] = (200, 30, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


@pytest.fixture
def server() -> Iterator[MediaServer]:
    with MediaServer.running() as running:
        yield running


def _entries(media_dir: Path, *row_ids: str) -> list[media.MediaEntry]:
    with media.MediaIndex(media_dir) as index:
        found = [index.get(row_id) for row_id in row_ids]
    assert all(found), found
    return [e for e in found if e is not None]


def test_n_files_over_c_threads_open_about_c_connections(server, tmp_path):
    png = _image((32, 24), "PNG")
    files, threads = 120, 4
    items = [(f"dr-{i}", server.add(f"img/{i}.png", png, "image/png")) for i in range(files)]
    summary = media.download_all(
        items,
        "image",
        tmp_path,
        max_side=1024,
        concurrency=threads,
        total=files,
        allow_loopback=True,
    )
    assert summary.fetched == files and server.requests == files
    # One connection per thread at most (a keep-alive pool of `threads`); a client that opens a
    # connection per file (requests.get) makes `files` of them.
    assert server.connections <= threads + 1


def test_5xx_is_retried_and_4xx_is_a_broken_row(server, tmp_path):
    png = _image((20, 20), "PNG")
    flaky = server.add("flaky.png", png, "image/png")
    server.fail("flaky.png", times=2, status=503)
    gone = server.url("gone.png")  # 404
    summary = media.download_all(
        [("dr-flaky", flaky), ("dr-gone", gone)],
        "image",
        tmp_path,
        max_side=64,
        concurrency=2,
        allow_loopback=True,
    )
    assert (summary.fetched, summary.broken) == (1, 1)
    flaky_entry, gone_entry = _entries(tmp_path, "dr-flaky", "dr-gone")
    assert flaky_entry.error is None and (tmp_path / str(flaky_entry.path)).exists()
    assert gone_entry.error == f"HTTP 404 ({gone})"
    assert server.requests == 3 + 1  # two 503s, then the image; one 404, not retried


def test_a_server_that_keeps_failing_fails_the_stage(server, tmp_path, monkeypatch):
    monkeypatch.setattr("lbtrain_trainer.fetcher.BACKOFF_S", 0.01)
    url = server.add("down.png", _image((8, 8), "PNG"), "image/png")
    server.fail("down.png", times=100, status=502)
    with pytest.raises(media.TransientMediaError, match="502"):
        media.download_all(
            [("dr-1", url)], "image", tmp_path, max_side=64, concurrency=1, allow_loopback=True
        )
    with media.MediaIndex(tmp_path) as index:
        assert index.get("dr-1") is None  # not recorded: the next attempt fetches it


def test_rows_stored_by_an_earlier_attempt_are_kept(server, tmp_path):
    png = _image((16, 16), "PNG")
    items = [(f"dr-{i}", server.add(f"k/{i}.png", png, "image/png")) for i in range(5)]
    first = media.download_all(
        items[:3], "image", tmp_path, max_side=64, concurrency=2, allow_loopback=True
    )
    assert (first.fetched, first.kept) == (3, 0)
    (entry,) = _entries(tmp_path, "dr-0")
    (tmp_path / str(entry.path)).unlink()  # a lost file is fetched again
    second = media.download_all(
        items, "image", tmp_path, max_side=64, concurrency=2, allow_loopback=True
    )
    assert (second.fetched, second.kept) == (3, 2)
    assert server.requests == 3 + 3


def test_an_image_that_needs_no_change_is_stored_byte_identical(server, tmp_path):
    jpeg = _image((300, 200), "JPEG")
    png = _image((300, 200), "PNG")
    items = [
        ("dr-jpeg", server.add("a.jpeg", jpeg, "image/jpeg")),
        ("dr-png", server.add("b.png", png, "image/png")),
    ]
    media.download_all(items, "image", tmp_path, max_side=300, concurrency=2, allow_loopback=True)
    jpeg_entry, png_entry = _entries(tmp_path, "dr-jpeg", "dr-png")
    assert str(jpeg_entry.path).endswith(".jpg") and str(png_entry.path).endswith(".png")
    assert (tmp_path / str(jpeg_entry.path)).read_bytes() == jpeg
    assert (tmp_path / str(png_entry.path)).read_bytes() == png
    assert (jpeg_entry.width, jpeg_entry.height) == (300, 200)


def test_a_large_jpeg_is_shrunk_and_keeps_its_original_size(server, tmp_path):
    big = _image((2400, 1600), "JPEG", (10, 120, 240))
    truncated = _image((40, 40), "PNG")[:-30]
    gif = _image((40, 30), "GIF")
    items = [
        ("dr-big", server.add("big.jpg", big, "image/jpeg")),
        ("dr-cut", server.add("cut.png", truncated, "image/png")),
        ("dr-gif", server.add("small.gif", gif, "image/gif")),
    ]
    summary = media.download_all(
        items, "image", tmp_path, max_side=500, concurrency=2, allow_loopback=True
    )
    assert (summary.fetched, summary.broken) == (2, 1)
    big_entry, cut_entry, gif_entry = _entries(tmp_path, "dr-big", "dr-cut", "dr-gif")
    assert (big_entry.width, big_entry.height) == (2400, 1600)
    with Image.open(tmp_path / str(big_entry.path)) as stored:
        assert stored.size == (500, 333) and stored.format == "JPEG"
        r, g, b = stored.convert("RGB").getpixel((250, 160))  # type: ignore[misc]
        assert abs(r - 10) < 8 and abs(g - 120) < 8 and abs(b - 240) < 8
    assert "decodable" in str(cut_entry.error)  # a truncated file is decoded, and fails
    with Image.open(tmp_path / str(gif_entry.path)) as stored:  # another format: re-encoded
        assert stored.format == "JPEG" and stored.size == (40, 30)


def test_image_plans_are_pure_decisions():
    assert target_size((4000, 3000), 1024) == (1024, 768)
    assert target_size((3000, 4000), 1333) == (1000, 1333)
    assert target_size((100, 80), 1024) == (100, 80)
    assert target_size((5000, 2), 100) == (100, 1)
    keep = plan_image("PNG", (320, 240), 1024, True, ".jpg")
    assert (keep.action, keep.suffix, keep.size) == ("keep", ".png", (320, 240))
    assert plan_image("JPEG", (4000, 3000), 1024, True, ".jpg").action == "shrink"
    assert plan_image("PNG", (320, 240), 1024, False, ".jpg").action == "shrink"
    assert plan_image("WEBP", (320, 240), 1024, True, ".png").suffix == ".png"
    assert looks_complete("PNG", _image((4, 4), "PNG"))
    assert not looks_complete("PNG", _image((4, 4), "PNG")[:-4])
    assert looks_complete("JPEG", _image((4, 4), "JPEG"))
    assert not looks_complete("JPEG", _image((4, 4), "JPEG")[:-2])


def test_progress_line_says_rows_rates_and_eta():
    snap = ProgressSnapshot(
        total=100_000, fetched=24_000, kept=1_000, broken=12, bytes=3_100_000_000, elapsed_s=30
    )
    line = format_progress(snap)
    assert line.startswith("media: 25,012/100,000 rows (25.0%)")
    assert "24,000 fetched (3.1 GB, 800 files/s, 103.3 MB/s)" in line
    assert "1,000 kept from an earlier attempt, 12 broken" in line
    assert line.endswith("30s elapsed, ETA 1m30s")
    unknown = format_progress(ProgressSnapshot(None, 5, 0, 0, 500, 2.0))
    assert "media: 5 rows, " in unknown and unknown.endswith("ETA unknown")
    final = format_progress(ProgressSnapshot(10, 10, 0, 0, 10, 3700.0), final=True)
    assert final.endswith("done in 1h01m") and "ETA" not in final


def test_progress_is_logged_at_most_every_interval(caplog):
    now = [0.0]
    reporter = ProgressReporter(
        1000, logging.getLogger("test.progress"), interval_s=5, clock=lambda: now[0]
    )
    with caplog.at_level(logging.INFO, logger="test.progress"):
        for _ in range(1000):
            now[0] += 0.03  # 30 s in all
            reporter.add(fetched=1, nbytes=10)
        reporter.finish()
    lines = [r.getMessage() for r in caplog.records]
    assert 5 <= len(lines) <= 7  # one per 5 s, and the final line
    assert "done in 30s" in lines[-1] and "1,000/1,000 rows" in lines[-1]


def test_manifest_writer_writes_what_prepared_dataset_loads(tmp_path):
    from lbtrain_trainer.manifest import Example
    from lbtrain_trainer.splits import Split

    examples = [
        Example(f"dr-{i}", None, Split.TRAIN if i % 2 else Split.TEST, f"media/{i}", labels=("a",))
        for i in range(4)
    ]
    with ManifestWriter(tmp_path / "d.json", "text_single_classification", "q") as writer:
        for example in examples:
            writer.add(example)
        writer.finish(("a",), {"train": 2, "test": 2}, Split.TEST, Split.TRAIN, {"x": ["dr-9"]})
    expected = PreparedDataset(
        "text_single_classification",
        "q",
        ("a",),
        examples,
        Split.TEST,
        Split.TRAIN,
        {"x": ["dr-9"]},
    )
    assert PreparedDataset.load(tmp_path / "d.json") == expected
    expected.save(tmp_path / "e.json")
    assert json.loads((tmp_path / "d.json").read_text()) == json.loads(
        (tmp_path / "e.json").read_text()
    )

    def fail_midway() -> None:
        with ManifestWriter(tmp_path / "f.json", "ner", "") as writer:
            writer.add(examples[0])
            raise RuntimeError("prepare failed")

    with pytest.raises(RuntimeError):
        fail_midway()
    assert not (tmp_path / "f.json").exists() and not (tmp_path / "f.partial").exists()


def test_index_counts_include_rows_not_yet_committed(tmp_path):
    with media.MediaIndex(tmp_path) as index:
        index.put("dr-ok", media.MediaEntry(path="a.png", width=1, height=1))
        index.put("dr-bad", media.MediaEntry(error="HTTP 404"))
        assert index.broken() == 1  # before the batch's second has passed
        index.put("dr-ok-2", media.MediaEntry(path="b.png", width=1, height=1))
        assert len(index) == 3
