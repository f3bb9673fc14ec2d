"""Live training progress, pushed from rank 0 to the operator (docs/progress.md).

The train loop tells a :class:`LiveProgress` where it is at each epoch end and, when
:meth:`LiveProgress.due` says so, mid-epoch; a background thread POSTs the newest report to
the operator's progress endpoint with the pod's projected service-account token (re-read from
its file each time: the kubelet rotates it). Training never waits for it: the hand-over is a
slot of one that the newest report overwrites, a report is sent at most once per interval, a
failure is logged once (then quietly counted) and the next report simply replaces it. At the
end of training the last report is given a short while to leave, so the last epoch shows
before the run completes.

The operator, not the pod, writes the ModelRun status and tells Labelbox; the pod has no
Kubernetes API rights. Only rank 0 reports (other ranks get a :class:`LiveProgress` that does
nothing). :func:`build_report` and :func:`eta_seconds` are pure.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbtrain import contract

log = logging.getLogger(__name__)
DEFAULT_INTERVAL_S = 30.0
SEND_TIMEOUT_S = 5.0
# How long the end of training waits for the last report to leave.
FLUSH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Position:
    """Where training is, as the loop knows it."""

    epoch: int  # the epoch in progress (1-based), or the one that just ended
    epochs: int
    step: int  # optimizer steps done since the start of training (all epochs)
    steps: int  # steps of the whole training
    train_loss: float | None  # mean loss of the epoch so far
    examples_per_s: float | None  # this run's training throughput so far
    elapsed_s: float  # training seconds so far (this attempt)
    steps_this_attempt: int  # steps done by this attempt (a resumed run starts at its epoch)
    validation_metric: str | None = None
    validation_value: float | None = None


def eta_seconds(pos: Position) -> float | None:
    """Seconds left at this attempt's pace (None until a step is done)."""
    if pos.steps_this_attempt <= 0 or pos.elapsed_s <= 0:
        return None
    per_step = pos.elapsed_s / pos.steps_this_attempt
    return round(max(0, pos.steps - pos.step) * per_step, 1)


def _stamp(moment: dt.datetime) -> str:
    utc = moment.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def build_report(model_run_id: str, pos: Position, now: dt.datetime) -> dict[str, Any]:
    """One report, every field of `contract.PROGRESS_FIELDS` present (None when unknown)."""
    report = {
        "modelRunId": model_run_id,
        "epoch": pos.epoch,
        "epochs": pos.epochs,
        "step": pos.step,
        "steps": pos.steps,
        "trainLoss": _rounded(pos.train_loss, 5),
        "validationMetric": pos.validation_metric,
        "validationValue": _rounded(pos.validation_value, 5),
        "examplesPerSecond": _rounded(pos.examples_per_s, 2),
        "etaSeconds": eta_seconds(pos),
        "measuredAt": _stamp(now),
    }
    return {key: report[key] for key in contract.PROGRESS_FIELDS}


def post(url: str, token_file: str, report: Mapping[str, Any], timeout_s: float) -> None:
    """POST one report with the token read afresh; raises on any failure."""
    token = Path(token_file).read_text().strip()
    request = urllib.request.Request(
        url,
        data=json.dumps(report).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
        answer.read()


Sender = Callable[[Mapping[str, Any]], None]


class LiveProgress:
    """The train loop's side: `due()` (cheap), `offer(pos)`, `close()`. Thread-safe."""

    def __init__(
        self,
        model_run_id: str,
        send: Sender | None,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.model_run_id, self.send, self.interval_s = model_run_id, send, interval_s
        self.clock, self.wall = clock, wall
        self._slot: dict[str, Any] | None = None
        self._cond = threading.Condition()
        self._last_sent: float | None = None
        self._last_offer: float | None = None
        self._closed = False
        self._busy = False
        self.sent = self.failures = 0
        self._thread: threading.Thread | None = None
        if send is not None:
            self._thread = threading.Thread(target=self._run, name="live-progress", daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        return self.send is not None

    def due(self) -> bool:
        """Whether a mid-epoch report would be sent now (one clock read: call it every step)."""
        if self.send is None:
            return False
        last = self._last_offer
        return last is None or self.clock() - last >= self.interval_s

    def offer(self, pos: Position) -> None:
        """Hand over the newest position; never blocks on the network."""
        if self.send is None:
            return
        report = build_report(self.model_run_id, pos, self.wall())
        self._last_offer = self.clock()
        with self._cond:
            self._slot = report  # newest wins
            self._cond.notify()

    def _next(self) -> dict[str, Any] | None:
        with self._cond:
            while True:
                if self._slot is not None:
                    wait = 0.0
                    if self._last_sent is not None:
                        wait = self._last_sent + self.interval_s - self.clock()
                    if wait <= 0 or self._closed:
                        report, self._slot = self._slot, None
                        self._busy = True
                        return report
                    self._cond.wait(wait)
                elif self._closed:
                    return None
                else:
                    self._cond.wait()

    def _run(self) -> None:
        assert self.send is not None
        while (report := self._next()) is not None:
            try:
                self.send(report)
                self.sent += 1
            except Exception as exc:
                self.failures += 1
                if self.failures == 1:
                    log.warning("progress report not delivered (later failures are quiet): %s", exc)
            finally:
                with self._cond:
                    self._last_sent = self.clock()
                    self._busy = False
                    self._cond.notify_all()

    def close(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Let the last report leave (at most `timeout_s`), then stop the thread."""
        if self._thread is None:
            return
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        if self.failures:
            log.info("progress reports: %d sent, %d not delivered", self.sent, self.failures)


def from_env(is_main: bool, env: Mapping[str, str] | None = None) -> LiveProgress:
    """Rank 0's reporter when the operator gave a progress URL; else one that does nothing."""
    env = os.environ if env is None else env
    url = env.get(contract.ENV_PROGRESS_URL, "")
    run_id = env.get(contract.ENV_MODEL_RUN_ID, "")
    if not is_main or not url or not run_id:
        return LiveProgress(run_id, None)
    token_file = env.get(contract.ENV_PROGRESS_TOKEN_FILE, contract.PROGRESS_TOKEN_FILE)
    try:
        interval = max(1.0, float(env.get(contract.ENV_PROGRESS_INTERVAL_S, DEFAULT_INTERVAL_S)))
    except ValueError:
        interval = DEFAULT_INTERVAL_S

    def send(report: Mapping[str, Any]) -> None:
        post(url, token_file, report, SEND_TIMEOUT_S)

    return LiveProgress(run_id, send, interval)
