"""The ceiling an operator is measured against: a plain client creating the operator's Jobs.

No operator of ModelRuns can create Jobs faster than the API server creates them for a plain
client; and none can beat a plain client that creates each ModelRun and then its Job (the
*pairs*: the floor of this design, with no watch, finalizer, status write or Event).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

from bench.lib.aio import bounded, with_retry
from bench.lib.ids import run_id
from bench.lib.kube import create_namespace, delete_namespace
from bench.lib.operator import TEMPLATE, run_body
from bench.lib.procfs import cpu_of
from bench.lib.stats import median
from lbtrain.kube import JOBS, MODELRUNS, TRAININGTEMPLATES, KubeClient
from lbtrain_dev.fake_labelbox import FakeLabelbox


@dataclass
class Ceiling:
    seconds: float
    latencies: list[float]
    cpu_apiserver_etcd: float
    cpu_kcm: float
    cleanup_s: float = 0.0
    pair_seconds: float = float("nan")
    rates: list[float] = field(default_factory=list)  # every repeat's Jobs/s
    pair_rates: list[float] = field(default_factory=list)  # every repeat's pairs/s

    def rate(self, n: int) -> float:
        return n / self.seconds

    def pair_rate(self, n: int) -> float:
        return n / self.pair_seconds


def median_ceiling(n: int, repeats: list[Ceiling]) -> Ceiling:
    """One figure from repeated measurements: a single ceiling of a few seconds moved by ±25%
    between runs on this shared machine. The median repeat's detail (latencies, CPU) is kept;
    the pairs' median is taken on its own."""
    by_time = sorted(repeats, key=lambda c: c.seconds)
    return replace(
        by_time[len(by_time) // 2],
        pair_seconds=median([c.pair_seconds for c in repeats]),
        cleanup_s=sum(c.cleanup_s for c in repeats),
        rates=[c.rate(n) for c in repeats],
        pair_rates=[c.pair_rate(n) for c in repeats],
    )


def _settings(fake: FakeLabelbox) -> Any:
    from lbtrain_operator.settings import Settings

    return Settings(labelbox_endpoint=fake.endpoint, labelbox_rest_endpoint=fake.rest_endpoint)


def _job_for(mr: dict[str, Any], template: Any, settings: Any) -> dict[str, Any]:
    """The Job the operator builds for `mr` (admission's Job, annotations included)."""
    from lbtrain.resources.models import ModelRun
    from lbtrain_operator import jobspec

    job: dict[str, Any] = jobspec.build_job(
        ModelRun.model_validate(mr), mr["metadata"]["uid"], template, settings
    )
    return job


async def _jobs_alone(
    kube: KubeClient, n: int, concurrency: int, fake: FakeLabelbox, pids: dict[str, int]
) -> Ceiling:
    """N Jobs of the operator's shape, their owners created untimed beforehand."""
    from lbtrain.resources.models import TrainingTemplate

    ns = f"ceil-{n}-{secrets.token_hex(3)}"
    await create_namespace(kube, ns)
    template = TrainingTemplate.model_validate(await kube.create(TRAININGTEMPLATES, TEMPLATE, ns))
    settings = _settings(fake)
    owners: list[dict[str, Any]] = [{}] * n

    async def make_owner(i: int) -> None:
        body = run_body(i, run_id(ns, i), for_operator=False)
        owners[i] = await with_retry(lambda: kube.create(MODELRUNS, body, ns))

    await bounded(concurrency, n, make_owner)  # untimed: the Jobs' owners
    jobs = [_job_for(mr, template, settings) for mr in owners]
    await asyncio.sleep(2.0)  # let the API server settle after the owners' creates
    cpu0 = cpu_of(pids)
    started = time.perf_counter()
    latencies = await bounded(
        concurrency, n, lambda i: with_retry(lambda: kube.create(JOBS, jobs[i], ns))
    )
    seconds = time.perf_counter() - started
    cpu = {k: v - cpu0[k] for k, v in cpu_of(pids).items()}
    result = Ceiling(
        seconds, latencies, cpu["kube-apiserver"] + cpu["etcd"], cpu["kube-controller-manager"]
    )
    result.cleanup_s = await delete_namespace(kube, ns)
    return result


async def _pairs(
    kube: KubeClient, n: int, concurrency: int, fake: FakeLabelbox
) -> tuple[float, float]:
    """Seconds for a plain client to create each run's ModelRun and then its Job; and the
    seconds its namespace took to go."""
    from lbtrain.resources.models import TrainingTemplate

    ns = f"pair-{n}-{secrets.token_hex(3)}"
    await create_namespace(kube, ns)
    template = TrainingTemplate.model_validate(await kube.create(TRAININGTEMPLATES, TEMPLATE, ns))
    settings = _settings(fake)
    await asyncio.sleep(2.0)

    async def make_pair(i: int) -> None:
        body = run_body(i, run_id(ns, i), for_operator=False)
        mr = await with_retry(lambda: kube.create(MODELRUNS, body, ns))
        job = _job_for(mr, template, settings)
        await with_retry(lambda: kube.create(JOBS, job, ns))

    started = time.perf_counter()
    await bounded(concurrency, n, make_pair)
    seconds = time.perf_counter() - started
    return seconds, await delete_namespace(kube, ns)


async def ceiling(
    kube: KubeClient, n: int, concurrency: int, fake: FakeLabelbox, pids: dict[str, int]
) -> Ceiling:
    """One measurement of the ceiling and the pairs, each in a namespace deleted after it."""
    result = await _jobs_alone(kube, n, concurrency, fake, pids)
    result.pair_seconds, cleanup_s = await _pairs(kube, n, concurrency, fake)
    result.cleanup_s += cleanup_s
    return result
