"""The ``export`` stage (Labelbox status EXPORTING_DATA): rows, media, hyperparameters.

It is the only stage before training that talks to Labelbox, so it also resolves the
hyperparameters (template defaults overridden by the model run's config) and each row's split
(:func:`lbtrain_trainer.splits.plan`: the export's, else ``model_run_data_rows()``'s, else a
hash), and leaves them in the workspace for the others. Media are fetched here, once, so that
``prepare`` and ``train`` are pure functions of the workspace. In a run of several pods only
pod 0 exports; the others unpack what it published (:mod:`lbtrain_trainer.shared_prepare`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lbtrain_trainer import (
    artifacts,
    features,
    hyperparams,
    labelbox_io,
    media,
    shared_prepare,
    splits,
)
from lbtrain_trainer.modeltypes import registry
from lbtrain_trainer.rows import parse_row
from lbtrain_trainer.settings import Settings
from lbtrain_trainer.workspace import Workspace

log = logging.getLogger(__name__)


def media_kind(model_type: str) -> str:
    """What the export downloads per data row for ``model_type``: "image" or "text"."""
    return registry.get(model_type).media


def media_sources(path: Path, model_run_id: str, model_id: str) -> Iterator[tuple[str, str]]:
    """(data row id, row data) of each row of an export file, read as a stream."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = parse_row(json.loads(line), model_run_id, model_id)
                yield row.data_row_id, row.row_data


def fetch_media(
    settings: Settings, hp: hyperparams.Hyperparameters, rows: int | None = None
) -> media.MediaSummary:
    """Download the media of every row in the workspace's export (``rows`` of them, if known:
    the progress log then has an ETA)."""
    ws = Workspace(settings.workspace)
    export_file = ws.require(ws.export_file, "export")
    return media.download_all(
        media_sources(export_file, settings.model_run_id, settings.model_id),
        media_kind(settings.model_type),
        ws.media_dir,
        max_side=hp.max_image_side,
        concurrency=hp.download_concurrency,
        processes=hp.download_processes or None,
        total=rows,
        allow_loopback=settings.allow_loopback_media,
    )


class ExportScan:
    """What the export stage learns from each row as it streams past: {data row id: the split
    its row carries (None: none)}, the feature schema-id table (:class:`features.Collector`)
    and the row count.

    The rows are scanned on their way from Labelbox to the media downloads (:meth:`sources`),
    so that the first download starts with the first row instead of after the whole export
    was written and read back (2 s of a 20k-image stage). They are read one at a time under
    ``media``'s row lock (by a download thread, or by the stage's main thread when download
    processes fetch), so the scan needs no lock of its own.
    """

    def __init__(self, model_run_id: str, model_id: str) -> None:
        self.model_run_id = model_run_id
        self.model_id = model_id
        self.exported: dict[str, Any] = {}
        self.rows = 0
        self._features = features.Collector()

    def sources(self, rows: Iterable[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        """(data row id, row data) of each row, scanning each on the way."""
        for raw in rows:
            row = parse_row(raw, self.model_run_id, self.model_id)
            self.exported[row.data_row_id] = row.split
            self._features.add(raw)
            self.rows += 1
            yield row.data_row_id, row.row_data

    def table(self) -> features.Table:
        return self._features.table()


def resolve_splits(
    settings: Settings, hp: hyperparams.Hyperparameters, model_run: Any, exported: dict[str, Any]
) -> tuple[splits.SplitPlan, int]:
    """Every row's split (``exported``: what the export's rows carry, :class:`ExportScan`) and
    its source; writes hashed ones back if asked (rows written)."""
    from_labelbox = None
    if exported and not any(exported.values()):
        from_labelbox = labelbox_io.data_row_splits(model_run)
        log.info(
            "the export carries no split: read %d assigned of %d from model_run_data_rows()",
            sum(v is not None for v in from_labelbox.values()),
            len(from_labelbox),
        )
    plan = splits.plan(exported, from_labelbox, hp.validation_fraction, hp.test_fraction)
    counts = plan.counts()
    log.info(
        "splits: %d rows from the export, %d from the model run's data rows, %d hash-assigned "
        "(unassigned in Labelbox)",
        counts["export"],
        counts["labelbox"],
        counts["hash"],
    )
    written = 0
    hashed = plan.hashed()
    if hp.write_back_splits and hashed:
        try:
            written = labelbox_io.assign_splits(model_run, hashed)
            log.info("wrote %d hash-assigned splits back to the model run", written)
        except Exception as exc:  # the splits stay valid for training; Labelbox just lacks them
            log.warning("could not write hash-assigned splits back to Labelbox: %s", exc)
    return plan, written


def run_export(settings: Settings, model_run: Any | None = None) -> dict[str, Any]:
    # First: a bucket that cannot take the weights fails the run before any export or download.
    artifacts.open_checked(settings.artifact_destination)
    ws = Workspace(settings.workspace)
    ws.root.mkdir(parents=True, exist_ok=True)
    # A run of several pods exports once: pod 0, unless a bundle of this run is published.
    reused = shared_prepare.reuse_for_export(settings, ws)
    if reused is not None:
        return reused
    model_run = model_run or labelbox_io.get_model_run(settings)
    hp, ignored = hyperparams.resolve_hyperparameters(
        settings.model_type, settings.hyperparameters, labelbox_io.get_config(model_run)
    )
    hyperparams.save(hp, ws.hyperparameters_file)
    if ignored:
        log.warning("ignoring unknown hyperparameters: %s", ", ".join(ignored))
    # The export is written, scanned and its media fetched in one stream (ExportScan).
    scan = ExportScan(settings.model_run_id, settings.model_id)
    fetched = media.download_all(
        scan.sources(labelbox_io.stream_export(model_run, ws.export_file)),
        media_kind(settings.model_type),
        ws.media_dir,
        max_side=hp.max_image_side,
        concurrency=hp.download_concurrency,
        processes=hp.download_processes or None,
        allow_loopback=settings.allow_loopback_media,
    )
    rows = scan.rows
    log.info("exported %d rows of model run %s", rows, settings.model_run_id)
    plan, written = resolve_splits(settings, hp, model_run, scan.exported)
    ws.splits_file.write_text(json.dumps(plan.to_json()))
    ws.features_file.write_text(json.dumps(scan.table()))
    result = {
        "stage": "export",
        "rows": rows,
        "media_fetched": fetched.fetched,
        "media_kept": fetched.kept,
        "media_broken": fetched.broken,
        "split_sources": plan.counts(),
        "splits_written_back": written,
        "ignored_hyperparameters": ignored,
    }
    shared_prepare.exported(settings, ws, result)
    return result
