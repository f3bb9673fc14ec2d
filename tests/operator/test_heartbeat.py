"""Liveness means watches deliver: the probe fails once heartbeats stop arriving."""

from __future__ import annotations

import time

import pytest

from lbtrain_operator.heartbeat import Heartbeat


def test_liveness_fails_when_the_watch_stops_delivering_heartbeats() -> None:
    beat = Heartbeat(kube=None, namespace="ns", interval_s=0.01)  # type: ignore[arg-type]
    beat.seen()
    assert beat.check().startswith("heartbeat seen")
    time.sleep(0.05)
    with pytest.raises(RuntimeError, match="watches stalled"):
        beat.check()
    beat.seen()  # a late event revives it
    assert beat.check().startswith("heartbeat seen")
