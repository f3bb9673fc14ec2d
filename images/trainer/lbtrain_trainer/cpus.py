"""How many CPUs this container may use, without importing torch.

The train stage sizes torch's thread pool from it and the export stage bounds how many images
it decodes at once: both must follow the pod's CPU limit, not the node's core count. Under
torchrun the container's processes share that quota: each takes its part of it.
"""

from __future__ import annotations

import os


def cpu_quota(cgroup_file: str = "/sys/fs/cgroup/cpu.max") -> int:
    """CPUs this container may use: its cgroup v2 quota, else the cores it can see.

    Torch sizes its thread pool from the node's cores, not the pod's CPU limit; on a busy node
    that oversubscription makes small-model training many times slower.
    """
    visible = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    try:
        quota, period = open(cgroup_file).read().split()[:2]  # noqa: SIM115
        if quota != "max":
            return max(1, min(visible, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, visible)


def threads_per_process(quota: int, local_world_size: int) -> int:
    """Threads for one of `local_world_size` training processes sharing a container's `quota`
    CPUs: an equal part, at least one. Every process sizing its pool to the whole quota would
    oversubscribe the container `local_world_size` times over."""
    return max(1, quota // max(1, local_world_size))
