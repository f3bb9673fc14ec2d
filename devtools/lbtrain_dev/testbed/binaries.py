"""Finding the control-plane binaries: build them (or find them cached) with testbed/build.sh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")


def repo_root() -> Path:
    """The checkout this package runs from; the testbed is a development tool of the source tree.

    This file is devtools/lbtrain_dev/testbed/binaries.py, three folders below the root.
    """
    return Path(__file__).resolve().parents[3]


def build_script() -> Path:
    return repo_root() / "testbed" / "build.sh"


def ensure_binaries(*, quiet: bool = False) -> Path:
    """The folder holding every binary; builds them on first use (a cold build takes 5 to 15 min).

    `LBTRAIN_TESTBED_BIN` names a ready folder and skips the build (for packagers and CI caches).
    Build progress streams to stderr so a long first run is visibly alive.
    """
    override = os.environ.get("LBTRAIN_TESTBED_BIN")
    if override:
        folder = Path(override)
        missing = [b for b in REQUIRED if not (folder / b).exists()]
        if missing:
            raise FileNotFoundError(f"LBTRAIN_TESTBED_BIN={folder} lacks {', '.join(missing)}")
        return folder
    script = build_script()
    if not script.exists():
        raise FileNotFoundError(f"{script} not found: the testbed needs a source checkout")
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{script} failed with exit code {result.returncode} (see its output above)"
        )
    return Path(result.stdout.strip().splitlines()[-1])
