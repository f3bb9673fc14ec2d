"""The ``export`` stage (Labelbox status EXPORTING_DATA): rows, media, hyperparameters.

It is the only stage before training that talks to Labelbox, so it also resolves the
hyperparameters (template defaults overridden by the model run's config) and leaves them in
the workspace for the others. Media are fetched here, once, so that ``prepare`` and ``train``
are pure functions of the workspace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lbtrain_trainer import hyperparams, labelbox_io, media
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
        total=rows,
        allow_loopback=settings.allow_loopback_media,
    )


def run_export(settings: Settings, model_run: Any | None = None) -> dict[str, Any]:
    ws = Workspace(settings.workspace)
    ws.root.mkdir(parents=True, exist_ok=True)
    model_run = model_run or labelbox_io.get_model_run(settings)
    hp, ignored = hyperparams.resolve_hyperparameters(
        settings.model_type, settings.hyperparameters, labelbox_io.get_config(model_run)
    )
    hyperparams.save(hp, ws.hyperparameters_file)
    if ignored:
        log.warning("ignoring unknown hyperparameters: %s", ", ".join(ignored))
    rows = labelbox_io.write_export(model_run, ws.export_file)
    log.info("exported %d rows of model run %s", rows, settings.model_run_id)
    fetched = fetch_media(settings, hp, rows)
    return {
        "stage": "export",
        "rows": rows,
        "media_fetched": fetched.fetched,
        "media_kept": fetched.kept,
        "media_broken": fetched.broken,
        "ignored_hyperparameters": ignored,
    }
