"""`lbtrain demo` as a user runs it: a signed request in, a trained model's statuses,
predictions and metrics out at the (fake) Labelbox, for one image and one text model type."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.testbed, pytest.mark.trainer, pytest.mark.slow]
FULL = ["EXPORTING_DATA", "PREPARING_DATA", "TRAINING_MODEL", "COMPLETE"]


@pytest.mark.timeout(900)
def test_demo_trains_an_image_and_a_text_model_end_to_end(
    testbed_bin: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lbtrain",
            "demo",
            "--model-type",
            "image_single_classification",
            "--model-type",
            "text_multi_classification",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "COMPLETE" in result.stdout  # the closing table
    runs = json.loads(report.read_text())
    for model_type, run in runs.items():
        assert [u["status"] for u in run["statusUpdates"]] == FULL, model_type
        final = run["statusUpdates"][-1]
        assert final["errorMessage"] is None
        assert (
            final["metadata"]["job"] and final["metadata"]["pod"] and final["metadata"]["summary"]
        )
        assert run["modelRun"]["phase"] == "Succeeded"
        predictions = [p for p in run["predictions"] if "metricValue" not in p]
        metrics = [p for p in run["predictions"] if "metricValue" in p]
        assert predictions and metrics, model_type
        assert len(run["imports"]) >= 1
        for row in predictions:
            assert row["dataRow"]["id"] and row["name"] and row["uuid"]
        assert run["config"], "run-level results were written to the model run config"
    # Labelbox formats: a radio answer is an object, a checklist answer a list (LABELBOX.md 5.3).
    image = [p for p in runs["image_single_classification"]["predictions"] if "answer" in p]
    assert image and all(0.0 <= p["answer"]["confidence"] <= 1.0 for p in image)
    text = [p for p in runs["text_multi_classification"]["predictions"] if "answer" in p]
    assert text and all(isinstance(p["answer"], list) for p in text)
