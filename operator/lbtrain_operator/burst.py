"""Jobs first during a burst of new runs: a new run's first status write waits for quiet.

Why: when hundreds of ModelRuns arrive at once, the API server is the bottleneck, and a new
run's bookkeeping costs it about as much as the Job does. On the testbed
(`bench/apiserver_costs.py`, figures in `bench/README.md`) one status PATCH of a ModelRun takes
7-8 ms of API server CPU: as much as creating the Job, 2.6 times creating the ModelRun. The
JobCreated Event adds 1-2 ms. Written as each Job is created, they roughly halve the rate at
which a burst's Jobs appear, and it is the Jobs, not the statuses, that get GPUs working.

So while Jobs are being created in quick succession (a burst), a run whose pass just created
its Job holds its status write and its Events until no Job has been created for `quiet_s`
seconds, then writes them: the same requests, after the burst instead of inside it. A run that
arrives alone is never held. `max_hold_s` bounds the wait under a stream of runs that never
goes quiet. Nothing is lost if the operator stops during a hold: the next pass finds the Job
by its deterministic name (`reconcile.Pass.ensure_job`) and writes the status then.

This module only decides; `reconcile` holds and writes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class BurstGate:
    """Notes when Jobs are created and tells a pass whether, and how long, to hold its write.

    `quiet_s` = 0 turns holding off: every status is written as soon as its Job exists.
    """

    def __init__(
        self, quiet_s: float, max_hold_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if quiet_s < 0 or max_hold_s < 0:
            raise ValueError("quiet_s and max_hold_s must not be negative")
        self.quiet_s = quiet_s
        self.max_hold_s = max_hold_s
        self._clock = clock
        self._last_created: float | None = None

    def job_created(self) -> bool:
        """Note that a pass created a Job; answer whether it belongs to a burst (another Job
        was created less than `quiet_s` before it), i.e. whether its pass should hold."""
        now = self._clock()
        previous, self._last_created = self._last_created, now
        return self.quiet_s > 0 and previous is not None and now - previous < self.quiet_s

    def hold_for(self, held_since: float) -> float:
        """Seconds a pass that started holding at `held_since` still waits (0: write now)."""
        if self._last_created is None:
            return 0.0
        now = self._clock()
        until = min(self._last_created + self.quiet_s, held_since + self.max_hold_s)
        return max(0.0, until - now)

    async def quiet(self) -> None:
        """Return once no Job has been created for `quiet_s`, or `max_hold_s` after the call."""
        held_since = self._clock()
        # A deadline that moves with every Job created, not an event to wait for: sleep until
        # it, look again.
        while (delay := self.hold_for(held_since)) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)
