"""Rank 0's live progress reports: every field in each, at most one per interval, the newest
winning, a slow or absent operator never slowing the train loop, the token re-read from its
file for each report, and a real small training that reports several times, in order, ending
with its last epoch (docs/progress.md)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lbtrain import contract
from lbtrain_trainer import live_progress as lv
from lbtrain_trainer.live_progress import LiveProgress, Position

pytestmark = pytest.mark.trainer
T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def pos(epoch: int = 2, step: int = 25, done: int = 25, elapsed: float = 50.0) -> Position:
    return Position(
        epoch=epoch,
        epochs=4,
        step=step,
        steps=100,
        train_loss=0.5,
        examples_per_s=80.0,
        elapsed_s=elapsed,
        steps_this_attempt=done,
    )


def test_a_report_has_every_field_and_an_eta_at_this_attempts_pace() -> None:
    got = lv.build_report("run-1", pos(), T0)
    assert list(got) == list(contract.PROGRESS_FIELDS)
    assert got["etaSeconds"] == 150.0  # 75 steps left at 2 s each
    assert got["measuredAt"] == "2026-01-01T12:00:00.000Z"
    # A resumed attempt's pace counts only its own steps.
    assert lv.eta_seconds(pos(step=75, done=25)) == 50.0
    assert lv.eta_seconds(pos(step=0, done=0, elapsed=0)) is None


class Recorder:
    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.delay_s, self.fail = delay_s, fail
        self.reports: list[Mapping[str, Any]] = []

    def __call__(self, report: Mapping[str, Any]) -> None:
        time.sleep(self.delay_s)
        if self.fail:
            raise OSError("connection refused")
        self.reports.append(report)


def test_a_slow_operator_never_slows_the_loop_and_the_newest_report_wins() -> None:
    slow = Recorder(delay_s=0.5)
    live = LiveProgress("run-1", slow, interval_s=0.0)
    started = time.perf_counter()
    for step in range(1, 201):
        live.offer(pos(step=step, done=step))
    offered = time.perf_counter() - started
    live.close()
    assert offered < 0.5, offered  # 200 offers while one call takes 0.5 s
    steps = [r["step"] for r in slow.reports]
    assert steps[-1] == 200 and len(steps) <= 3 and steps == sorted(steps)


def test_at_most_one_report_per_interval_and_the_last_still_leaves_at_close() -> None:
    sink = Recorder()
    live = LiveProgress("run-1", sink, interval_s=0.3)
    deadline = time.monotonic() + 1.0
    step = 0
    while time.monotonic() < deadline:
        step += 1
        if live.due():
            live.offer(pos(step=min(step, 100), done=1))
        time.sleep(0.001)
    live.offer(pos(epoch=4, step=100, done=100))  # the last epoch's end
    live.close()
    assert 2 <= len(sink.reports) <= 6, len(sink.reports)
    assert sink.reports[-1]["step"] == 100 and sink.reports[-1]["epoch"] == 4


def test_an_unreachable_operator_is_logged_once_then_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    live = LiveProgress("run-1", Recorder(fail=True), interval_s=0.0)
    with caplog.at_level(logging.WARNING, logger=lv.__name__):
        for step in range(1, 6):
            live.offer(pos(step=step, done=step))
            time.sleep(0.05)
        live.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and live.failures >= 2


def test_only_rank_zero_with_a_progress_url_reports() -> None:
    env = {
        contract.ENV_PROGRESS_URL: "http://127.0.0.1:1/progress",
        contract.ENV_MODEL_RUN_ID: "run-1",
    }
    assert not lv.from_env(False, env).enabled
    assert not lv.from_env(True, {contract.ENV_MODEL_RUN_ID: "run-1"}).enabled
    main = lv.from_env(True, env)
    assert main.enabled and main.interval_s == lv.DEFAULT_INTERVAL_S
    main.close(0)


class Endpoint:
    """A real HTTP server on loopback standing in for the operator's endpoint."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                outer.received.append((self.headers.get("Authorization", ""), body))
                self.send_response(202)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{contract.PROGRESS_PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint()
    yield server
    server.close()


def test_each_report_carries_the_token_as_the_file_holds_it_now(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    lv.post(endpoint.url, str(token), {"step": 1}, 5)
    token.write_text("rotated-token")  # the kubelet rotates the projected token
    lv.post(endpoint.url, str(token), {"step": 2}, 5)
    assert [auth for auth, _ in endpoint.received] == [
        "Bearer first-token",
        "Bearer rotated-token",
    ]


def test_a_small_training_reports_several_times_in_order_ending_with_its_last_epoch(
    seed: Any, endpoint: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = seed("text_single_classification", 40, epochs=4)
    assert run.main("export") == contract.EXIT_OK
    assert run.main("prepare") == contract.EXIT_OK
    token = tmp_path / "progress-token"
    token.write_text("a-projected-token")
    monkeypatch.setenv(contract.ENV_PROGRESS_URL, endpoint.url)
    monkeypatch.setenv(contract.ENV_PROGRESS_TOKEN_FILE, str(token))
    monkeypatch.setenv(contract.ENV_PROGRESS_INTERVAL_S, "1")
    monkeypatch.setenv(contract.ENV_MODEL_RUN_ID, run.run_id)
    assert run.main("train") == contract.EXIT_OK
    reports = [body for _, body in endpoint.received]
    assert len(reports) >= 2, reports
    for report in reports:
        assert list(report) == list(contract.PROGRESS_FIELDS)
        assert report["modelRunId"] == run.run_id and report["epochs"] == 4
        assert report["trainLoss"] is not None and report["examplesPerSecond"] > 0
    stamps = [r["measuredAt"] for r in reports]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert [r["step"] for r in reports] == sorted(r["step"] for r in reports)
    last = reports[-1]
    assert (last["epoch"], last["step"]) == (4, last["steps"]) and last["etaSeconds"] == 0.0
    # validated after every epoch: the last report carries the last epoch's accuracy
    assert last["validationMetric"] == "accuracy" and 0.0 <= last["validationValue"] <= 1.0
    assert {auth for auth, _ in endpoint.received} == {"Bearer a-projected-token"}
