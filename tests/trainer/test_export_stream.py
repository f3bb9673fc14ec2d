"""The export stage writes, scans and downloads in one stream of the SDK's rows.

Before, the stage wrote the whole export, read it back for splits and feature ids, and only then
downloaded the first image. (The SDK itself still buffers every export chunk to a temporary file
before it yields the first row: labelbox 7.17's ``_BufferedGCSFileReader``.)
"""

from __future__ import annotations

import copy
import json

from lbtrain import contract


def test_an_export_read_in_many_chunks_is_written_scanned_and_fetched_once(fake, seed):
    run = seed("image_single_classification", n_rows=40)
    saved = fake.export_chunk_bytes
    fake.export_chunk_bytes = 512  # ~1 row per chunk: the SDK reads the export in ~40 requests
    first = len(fake.requests)
    try:
        assert run.main("export") == 0
    finally:
        fake.export_chunk_bytes = saved
    paths = [r.path for r in fake.requests[first:] if r.method == "GET"]
    chunks = [n for n, p in enumerate(paths) if p.startswith("/files/export/")]
    media = [n for n, p in enumerate(paths) if p.startswith("/media/")]
    assert len(chunks) > 10
    assert len(media) == len({paths[n] for n in media}) == 40  # each image fetched once

    # What the later stages read is whole: every row in the export file, every row's split,
    # the feature table, and every image stored.
    summary = run.summary()
    assert summary["rows"] == 40 and summary["media_fetched"] == 40
    lines = (run.workspace / "export.ndjson").read_text().splitlines()
    assert len(lines) == 40
    assert not (run.workspace / "export.partial").exists()
    splits = json.loads((run.workspace / "splits.json").read_text())
    assert splits
    assert json.loads((run.workspace / "features.json").read_text())["features"]


def test_a_broken_row_halfway_fails_the_stage_and_leaves_no_export_file(fake, seed):
    run = seed("image_single_classification", n_rows=40)
    rows = copy.deepcopy(run.dataset.rows)
    del rows[30]["data_row"]["id"]  # downloads are under way when the stream reaches it
    run.fake.add_model_run(run.run_id, model_id="model-1", rows=rows)
    assert run.main("export") == contract.EXIT_BAD_INPUT
    summary = run.summary()
    assert summary["stage"] == "export" and "export row without data_row.id" in summary["error"]
    # Nothing a later stage or attempt could take for a whole export.
    for name in ("export.ndjson", "splits.json", "features.json"):
        assert not (run.workspace / name).exists(), name
