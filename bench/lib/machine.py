"""Where a figure comes from: the machine, its load, the date and the commit.

A figure without these cannot be compared with a later one (this machine is shared, and the
code moves), so every bench writes them next to its tables.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def nproc() -> int:
    """The CPUs this process may run on (what `nproc` prints)."""
    return len(os.sched_getaffinity(0))


def machine() -> str:
    """One line: CPUs, model, memory, Python."""
    return (
        f"`nproc` = {nproc()}, {cpu_model()}, {memory_gib():.0f} GiB, "
        f"Python {platform.python_version()}"
    )


def load() -> str:
    """The load average, 1/5/15 minutes."""
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return ""


def revision(*paths: str) -> str:
    """The commit measured, marked when the tree differs from it. With `paths`, the last commit
    that touched them (the code under test) and whether they differ. bench/README.md is what
    the benches write, so a change there does not mark a run."""
    if paths:
        commit = _git("log", "-1", "--format=%h", "--", *paths)
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", *paths)
    else:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = _git(
            "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/README.md"
        )
    return (commit or "unknown") + (" (with uncommitted changes)" if dirty else "")
