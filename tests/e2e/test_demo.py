"""`lbtrain demo` as a user runs it: a signed request in, a trained model's statuses,
predictions and metrics out at the (fake) Labelbox, for one image and one text model type."""

from __future__ import annotations

import json
import signal
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
    # Labelbox formats: a radio answer is an object, a checklist answer a list (docs/labelbox.md §5.3).
    image = [p for p in runs["image_single_classification"]["predictions"] if "answer" in p]
    assert image and all(0.0 <= p["answer"]["confidence"] <= 1.0 for p in image)
    text = [p for p in runs["text_multi_classification"]["predictions"] if "answer" in p]
    assert text and all(isinstance(p["answer"], list) for p in text)


def _children(pid: int) -> set[int]:
    """Every live descendant of `pid`, from /proc (no psutil here)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(300)
def test_sigterm_stops_everything_the_demo_started(testbed_bin: Path) -> None:
    """`kill <pid>` of `lbtrain demo --keep` stops its webhook, operator, pods and control
    plane, as Ctrl-C does, and exits 143."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "lbtrain", "demo", "--keep", "--model-type", "ner", "--rows", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        lines: list[str] = []
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("webhook on http://"):
                break
        else:
            raise AssertionError("the demo never started its webhook:\n" + "".join(lines))
        started = _children(demo.pid)
        commands = [Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ") for p in started]
        for part in (b"kube-apiserver", b"etcd", b" webhook ", b" operator "):
            assert any(part in c for c in commands), (part, commands)
        demo.send_signal(signal.SIGTERM)
        rest, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 128 + signal.SIGTERM, "".join(lines) + rest
    assert "SIGTERM: stopping everything it started" in rest
    left = sorted(p for p in started if _alive(p))
    assert left == [], [Path(f"/proc/{p}/cmdline").read_bytes() for p in left]


@pytest.mark.timeout(1500)
def test_demo_on_the_real_node_trains_in_pods_of_the_built_trainer_image(
    testbed_bin: Path, tmp_path: Path
) -> None:
    """`lbtrain demo --real-node`: the trainer runs as real pods on the testbed's node, from the
    image `make images` built, and Labelbox hears the same story as with the local runner."""
    from lbtrain_dev.images import ensure_images
    from lbtrain_dev.testbed.nodeconfig import NODE_NAME

    trainer = ensure_images(quiet=True).trainer.ref
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "lbtrain", "demo", "--real-node",
            "--model-type", "text_single_classification", "--rows", "40",
            "--report", str(report),
        ],
        capture_output=True,
        text=True,
        timeout=1450,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    run = json.loads(report.read_text())["text_single_classification"]
    assert [u["status"] for u in run["statusUpdates"]] == FULL
    final = run["statusUpdates"][-1]["metadata"]
    assert final["node"] == NODE_NAME, final
    assert final["image"] == trainer, final
    assert [p for p in run["predictions"] if "answer" in p]
