"""The operator's start-up heap freeze: what it freezes, and that cycles made later are still
collected (run in a fresh interpreter, so this test process keeps its own collector as it is)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from lbtrain_operator import heap

PROBE = textwrap.dedent(
    """
    import gc, json, sys, weakref
    from lbtrain_operator import heap

    frozen = heap.freeze_start_up_heap()

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle made after start-up: only the collector can free it
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    print(json.dumps({
        "frozen": frozen,
        "gen0": gc.get_threshold()[0],
        "labelbox_loaded": "labelbox" in sys.modules,
        "cycle_collected": gone() is None,
    }))
    """
)


def test_freeze_moves_the_start_up_heap_out_of_the_collectors_sight() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # kopf, aiohttp, pydantic and the labelbox SDK leave tens of thousands of objects behind.
    assert seen["frozen"] > 20_000, seen
    assert seen["labelbox_loaded"], "the lazily imported SDK must be frozen with the rest"
    assert seen["gen0"] == heap.GEN0_THRESHOLD
    assert seen["cycle_collected"], "a cycle made after the freeze must still be collected"
