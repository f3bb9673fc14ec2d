"""Small asyncio helpers of the load generators: bounded concurrency, retries, waits.

The benches create thousands of objects against an API server they are saturating on purpose;
their own requests must ride out its 429s, 5xx and timeouts (`with_retry`), or a figure would
measure the bench giving up rather than the code under test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from lbtrain.kube import ApiError, ApiUnreachable


async def with_retry(call: Callable[[], Awaitable[Any]], attempts: int = 5) -> Any:
    """`call()`, again after a timeout, 429 or 5xx, at most `attempts` times in all."""
    for attempt in range(attempts):
        try:
            return await call()
        except ApiUnreachable:
            if attempt == attempts - 1:
                raise
        except ApiError as exc:
            if (exc.status != 429 and exc.status < 500) or attempt == attempts - 1:
                raise
        await asyncio.sleep(0.2 * (attempt + 1))
    return None


async def bounded(
    concurrency: int, count: int, one: Callable[[int], Awaitable[Any]]
) -> list[float]:
    """Run `one(0..count-1)` with `concurrency` in flight; answer each call's latency."""
    latencies: list[float] = []
    todo = iter(range(count))

    async def worker() -> None:
        for i in todo:
            started = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))
    return latencies


async def until(done: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `done` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True
