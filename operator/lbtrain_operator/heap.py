"""The operator's heap and Python's cyclic garbage collector.

Why this module exists: under a burst of 1000 ModelRuns a sampling profile of the operator
showed about 40% of its CPU in the cyclic collector. Each full (generation 2) collection walks
every container object the process holds, and most of them are the ~80,000 objects that the
imports leave behind (kopf, aiohttp, pydantic schemas, the `labelbox` SDK), which never become
garbage. On a control plane whose API server shares the cores, that CPU is taken from the API
server, i.e. from Job creation itself.

So, once everything is imported, the start-up heap is moved out of the collector's sight
(`gc.freeze`), and the youngest generation is collected less often. Reference counting still
frees everything as before; the collector still finds cycles made after start-up.
"""

from __future__ import annotations

import gc

# CPython collects the youngest generation every 700 net container allocations and considers
# a full collection after every 100 of those. A burst allocates millions of containers (watch
# events, statuses, Job bodies), nearly all freed by reference counting within their pass; at
# 10,000 the full collections during a 1000-run burst went from 6 to 2 (bench/README.md).
GEN0_THRESHOLD = 10_000


def freeze_start_up_heap() -> int:
    """Import what the operator loads lazily, collect once, then freeze; answer how many
    objects the collector will no longer walk."""
    import labelbox  # noqa: F401  (loaded on the first report otherwise; its objects last)

    gc.collect()  # what is garbage now must not be frozen
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    return gc.get_freeze_count()
