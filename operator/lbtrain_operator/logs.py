"""The operator's logging: lbtrain's JSON lines (with tracebacks), and kopf kept quiet."""

from __future__ import annotations

import logging

from lbtrain.logs import configure_logging


def configure(level: str = "INFO", json_lines: bool = True) -> None:
    if json_lines:
        configure_logging(level, tracebacks=True)
    else:
        logging.basicConfig(
            level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True
        )
    # kopf logs every handler run at INFO (a heartbeat every few seconds); lbtrain logs the
    # transitions that matter itself.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
