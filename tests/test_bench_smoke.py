"""Every bench in `bench/` runs, in its `--smoke` mode, so that a bench that breaks fails the build.

A bench nobody runs rots: the operator bench once failed at its first step (its ModelRuns had
ids the CRD refuses) while its README figures stood. Each smoke run is the bench's own script as
a new user would start it (a subprocess, its real code path, tiny sizes, nothing written into
bench/README.md), and must exit 0 and print its result line(s). The benches that need what
`make test` does not have run without it: `realnode_bench.py --smoke` stands in for the node,
`webhook_bench.py --smoke` leaves out the FastAPI reference server when the `bench` extra is
not installed, `trainer_bench.py --smoke` trains the tiny text model on the CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "bench" / "README.md"

# bench script -> what its output must hold (each a result line or a table the bench prints).
EXPECTED = {
    "operator_bench.py": ["operator_bench: N = 4: ratio to ceiling", "full timelines 4/4"],
    "apiserver_costs.py": ["| `POST jobs` |", "A ModelRun and its Job alone:"],
    "webhook_bench.py": ["webhook_bench: ", "requests measured, 0 errors", "| `GET /models` | 1 |"],
    "realnode_bench.py": [
        "realnode_bench: 1 pairs measured, 0 failed",
        "| **ratio webhook / bare**",
    ],
    "export_bench.py": [
        '"median_export_files_s"',
        '"prepare_rss_mib"',
        '"server": "keepalive"',
        '"server": "http10"',
    ],
    "scale_bench.py": [
        "scale_bench: 3 shapes measured, 1 pairs each",
        "| **ratio bare / ModelRun**",
    ],
    "progress_bench.py": [
        "progress_bench: text_single_classification on cpu, 1 rounds",
        "progress_bench: operator CPU per progress report",
    ],
    "trainer_bench.py": [
        "| `text_single_classification` | BertForSequenceClassification, ",
        "total ",
    ],
}


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_bench_smoke(script: str, testbed_bin: Path) -> None:
    readme_before = README.read_text()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_PROXY": "127.0.0.1,localhost"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--smoke"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{script} --smoke exited {done.returncode}:\n{output[-6000:]}"
    missing = [line for line in EXPECTED[script] if line not in output]
    assert not missing, f"{script} --smoke did not print {missing}:\n{output[-6000:]}"
    assert README.read_text() == readme_before, f"{script} --smoke wrote into bench/README.md"
    print(f"{script} --smoke: {took:.1f}s")


def test_smoke_covers_every_bench() -> None:
    """A new bench script gets a smoke run here, or this fails."""
    scripts = {p.name for p in (REPO / "bench").glob("*.py")}
    helpers = {
        "webhook_results.py",
        "webhook_client.py",
        "floor_webhooks.py",
        "labelbox_coordinator.py",
    }
    assert scripts - helpers == set(EXPECTED)
