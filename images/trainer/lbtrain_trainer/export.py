"""The ``export`` stage (Labelbox status EXPORTING_DATA): rows, media, hyperparameters.

It is the only stage before training that talks to Labelbox, so it also resolves the
hyperparameters (template defaults overridden by the model run's config) and leaves them in
the workspace for the others. Media are fetched here, once, so that ``prepare`` and ``train``
are pure functions of the workspace.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from lbtrain_trainer import hyperparams, labelbox_io, media
from lbtrain_trainer.rows import parse_row
from lbtrain_trainer.settings import Settings
from lbtrain_trainer.workspace import Workspace

log = logging.getLogger(__name__)

IMAGE_TYPES = ("bounding_box", "image_single_classification", "image_multi_classification")


def media_kind(model_type: str) -> str:
    return "image" if model_type in IMAGE_TYPES else "text"


def fetch_media(settings: Settings, hp: hyperparams.Hyperparameters) -> dict[str, media.MediaEntry]:
    """Download the media of every row in the workspace's export."""
    ws = Workspace(settings.workspace)
    items = []
    with ws.require(ws.export_file, "export").open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = parse_row(json.loads(line), settings.model_run_id, settings.model_id)
                items.append((row.data_row_id, row.row_data))
    return media.download_all(
        items,
        media_kind(settings.model_type),
        ws.media_dir,
        max_side=hp.max_image_side,
        concurrency=hp.download_concurrency,
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
    index = fetch_media(settings, hp)
    return {
        "stage": "export",
        "rows": rows,
        "media_broken": sum(1 for e in index.values() if e.error),
        "ignored_hyperparameters": ignored,
    }
