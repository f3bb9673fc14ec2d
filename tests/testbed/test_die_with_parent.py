"""A SIGKILLed pytest session (or demo) leaves no testbed process behind.

The parent here is a real process that starts a component through `ControlPlane._spawn`, the
path every testbed component takes with `die_with_parent=True`. The component is a stand-in that
ignores SIGTERM, as kube-apiserver does in effect once etcd is gone too (its graceful shutdown
then hangs): only a SIGKILL from the kernel ends it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Ignores SIGTERM, then says so (its stdout is the component's log) and waits.
STAND_IN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(120)"
)

PARENT = """
import sys, time
from pathlib import Path
from lbtrain_dev.testbed.controlplane import ControlPlane

run_dir = Path(sys.argv[1])
(run_dir / "logs").mkdir(parents=True)
plane = ControlPlane(run_dir, run_dir)
plane._spawn("stand-in", ["-c", sys.argv[2]], True, exe=sys.executable)
print(plane.state.pids["stand-in"], flush=True)
time.sleep(120)
"""


def gone(pid: int) -> bool:
    """No such process, or a zombie (dead, waiting for whoever adopted it to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_component_dies_when_its_parent_is_sigkilled(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path), STAND_IN],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        log = tmp_path / "logs" / "stand-in.log"
        assert wait_until(lambda: log.exists() and "ready" in log.read_text(), 15), (
            "the stand-in never started"
        )
        os.kill(child, signal.SIGTERM)
        time.sleep(0.3)
        assert not gone(child), "the stand-in must outlive a SIGTERM, as a hung API server does"

        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert wait_until(lambda: gone(child), 5), (
            f"component {child} still runs 5 s after its parent was SIGKILLed"
        )
    finally:
        parent.kill()
        parent.wait(10)
        if child and not gone(child):
            os.kill(child, signal.SIGKILL)
