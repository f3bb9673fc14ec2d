"""Finding the control-plane binaries: build them (or find them cached) with testbed/build.sh."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lbtrain_dev.source import repo_root, run_build_script

__all__ = ["REQUIRED", "ensure_binaries", "repo_root"]

REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")


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
    stdout = run_build_script("testbed/build.sh", quiet=quiet, env={"PYTHON": sys.executable})
    return Path(stdout.strip().splitlines()[-1])
