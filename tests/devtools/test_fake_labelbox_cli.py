"""`lbtrain fake-labelbox` as a service: bundled datasets through the real SDK's export, status
updates recorded and shown on the timeline (printed and served)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import labelbox

from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed.controlplane import free_port


def test_service_serves_datasets_and_a_timeline() -> None:
    port = free_port()
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lbtrain",
            "fake-labelbox",
            f"--port={port}",
            "--api-key=k",
            "--model-type=ner",
            "--model-type=text_single_classification",
            "--rows=12",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/timeline", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        client = labelbox.Client(
            api_key="k",
            endpoint=base + "/graphql",
            rest_endpoint=base + "/api/v1",
            enable_experimental=True,
        )
        run = client.get_model_run(fake_cuid("fake-ner"))
        task = run.export(params={"predictions": False, "model_run_details": True})
        task.wait_till_done()
        rows = [
            json.loads(chunk.json) if isinstance(chunk.json, str) else chunk.json
            for chunk in task.get_buffered_stream()
        ]
        assert len(rows) == 12
        assert rows[0]["data_row"]["row_data"]  # NER text, inline
        run.update_status("EXPORTING_DATA", metadata={"phase": "Exporting"})
        run.update_status("FAILED", error_message="BadInput: no labels")
        timeline = urllib.request.urlopen(base + "/timeline", timeout=5).read().decode()
        assert f"{fake_cuid('fake-ner')}  status EXPORTING_DATA" in timeline
        assert "status FAILED  error: BadInput: no labels" in timeline
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"model run {fake_cuid('fake-text_single_classification')}" in out
    assert "status FAILED" in out  # the printed timeline
