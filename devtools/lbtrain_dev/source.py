"""The source checkout the development tools run from, and running the build scripts in it.

The testbed binaries (testbed/build.sh) and the images (images/build.sh) are built the same way:
a bash script that prints progress on stderr, which streams to the terminal so a long first
build is visibly alive, and answers on stdout once it is done.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path


def repo_root() -> Path:
    """The checkout this package runs from: devtools/lbtrain_dev/source.py, two folders below."""
    return Path(__file__).resolve().parents[2]


def run_build_script(
    relative: str, *, quiet: bool = False, env: Mapping[str, str] | None = None
) -> str:
    """Run the checkout's script `relative` with bash; answer its stdout.

    Raises FileNotFoundError outside a source checkout and RuntimeError when the script fails
    (its own output, above, says why).
    """
    script = repo_root() / relative
    if not script.exists():
        raise FileNotFoundError(f"{script} not found: this needs a source checkout")
    result = subprocess.run(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{script} failed with exit code {result.returncode} (see its output above)"
        )
    return result.stdout
