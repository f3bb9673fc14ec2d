"""SIGTERM ends a stage at once, with exit 143 and a termination message saying so.

In a pod the trainer is PID 1, for which the kernel ignores default-action signals: without its
own handler a deleted or evicted pod held its GPU for the whole grace period. Here the stage
is stopped while it waits on a Labelbox that accepts the connection and never answers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lbtrain import contract


@pytest.mark.timeout(120)
def test_sigterm_stops_a_stage_waiting_on_labelbox(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent.settimeout(60)
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    message = tmp_path / "termination-log"
    env = {
        **os.environ,
        contract.ENV_MODEL_RUN_ID: "cl-sigterm-0001",
        contract.ENV_MODEL_TYPE: "text_single_classification",
        "LABELBOX_API_KEY": "key",
        "LABELBOX_ENDPOINT": f"{endpoint}/graphql",
        "LABELBOX_REST_ENDPOINT": f"{endpoint}/api/v1",
        contract.ENV_WORKSPACE: str(tmp_path / "workspace"),
        contract.ENV_TERMINATION_MESSAGE_PATH: str(message),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    stage = subprocess.Popen(
        [sys.executable, "-m", "lbtrain", "trainer", "export"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        conn, _ = silent.accept()  # the stage is now blocked on Labelbox's answer
        stage.send_signal(signal.SIGTERM)
        _, stderr = stage.communicate(timeout=15)
    finally:
        if stage.poll() is None:
            stage.kill()
        silent.close()
    conn.close()
    assert stage.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    report = json.loads(message.read_text())
    assert report["status"] == "failed"
    assert report["stage"] == "export"
    assert report["exit_code"] == 143
