"""What every reconcile pass shares, created once at operator start: the API client, the
Labelbox reporter, the settings, the bounds on concurrent work, and each run's state as its
daemon holds it; and the clock the passes read.

It is its own module so that the pass (`reconcile`), the handlers and the steps with I/O of
their own (`templatestatus`) can all take it without importing one another.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from lbtrain.kube import KubeClient
from lbtrain_operator.burst import BurstGate
from lbtrain_operator.delivery import RunState
from lbtrain_operator.informer import RunObjects
from lbtrain_operator.labelbox import LabelboxReporter
from lbtrain_operator.metrics import Metrics
from lbtrain_operator.settings import Settings

EVENT_POSTS_IN_FLIGHT = 8


@dataclass
class Context:
    """What every pass needs, created once at operator start.

    `kube_slots` bounds how many passes talk to the API server at once: a burst of new runs
    then queues here, in order, instead of as hundreds of requests and bodies in flight (which
    is what the operator's peak memory followed). Labelbox reports are not held by it.
    `burst` holds a new run's first status write while a burst's Jobs are being created.
    `event_slots` bounds Event posts on their own, so that Events never hold up status writes
    and never take more than a few of the client's connections.
    """

    kube: KubeClient
    reporter: LabelboxReporter
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    backlog: set[tuple[str, str]] = field(default_factory=set)
    objects: RunObjects = field(default_factory=RunObjects)
    kube_slots: asyncio.Semaphore = field(init=False)
    event_slots: asyncio.Semaphore = field(init=False)
    burst: BurstGate = field(init=False)
    # Each run's status as its daemon holds it, and a lock its passes hold: a deletion
    # handler waits for the pass in progress and carries on from the daemon's truth.
    runs: dict[tuple[str, str], RunState] = field(default_factory=dict)
    run_locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    # The TrainingTemplate statuses this operator wrote, by (namespace, name, uid): the index may
    # lag behind a patch, and a stale status there must not make a second patch or Event.
    listed: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    listing_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # The last `status.progress` this replica's progress endpoint stored, by run: a daemon it
    # wakes may still hold the body from before the watch event (`Pass.queue_progress`).
    live_progress: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def listing_lock(self, namespace: str) -> asyncio.Lock:
        return self.listing_locks.setdefault(namespace, asyncio.Lock())

    def __post_init__(self) -> None:
        s = self.settings
        self.kube_slots = asyncio.Semaphore(s.max_concurrent_passes)
        self.event_slots = asyncio.Semaphore(EVENT_POSTS_IN_FLIGHT)
        self.burst = BurstGate(s.burst_quiet_s, s.burst_max_hold_s)

    def run_lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self.run_locks.setdefault(key, asyncio.Lock())

    def forget(self, key: tuple[str, str]) -> None:
        """The run is done with (finished and reported, or deleted)."""
        self.runs.pop(key, None)
        self.live_progress.pop(key, None)
        self.metrics.count_active(key, None)
        lock = self.run_locks.get(key)
        if lock is not None and not lock.locked():
            del self.run_locks[key]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
