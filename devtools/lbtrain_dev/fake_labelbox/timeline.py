"""A readable timeline of what the fake Labelbox received: for a person watching a demo or
debugging a test, the same facts the assertions use (statuses in order, errors, imports)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable

from lbtrain_dev.fake_labelbox.state import FakeState

KEY_METADATA = ("phase", "reason", "job", "pod", "node", "message")


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def events(state: FakeState) -> list[tuple[float, str, str]]:
    """(time, model run id, what happened), oldest first, for every run."""
    out: list[tuple[float, str, str]] = []
    with state.lock:
        for run_id, run in state.model_runs.items():
            for update in run.updates:
                meta = update.metadata or {}
                details = ", ".join(f"{k}={meta[k]}" for k in KEY_METADATA if meta.get(k))
                text = f"status {update.status}"
                if update.error_message:
                    text += f"  error: {update.error_message}"
                if details:
                    text += f"  ({details})"
                out.append((update.at, run_id, text))
            for name, item in run.imports.items():
                preds = sum(1 for row in item.rows if "metricValue" not in row)
                metrics = len(item.rows) - preds
                errors = len(item.error_rows)
                at = dt.datetime.fromisoformat(item.created_at.replace("Z", "+00:00")).timestamp()
                out.append(
                    (
                        at,
                        run_id,
                        f"import {name}: {preds} predictions, {metrics} metric rows, "
                        f"{errors} errors",
                    )
                )
    return sorted(out, key=lambda e: e[0])


def render(rows: Iterable[tuple[float, str, str]]) -> str:
    lines = [f"{_clock(at)}  {run_id}  {text}" for at, run_id, text in rows]
    return "\n".join(lines) + ("\n" if lines else "(nothing received yet)\n")
