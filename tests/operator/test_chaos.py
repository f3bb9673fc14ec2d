"""Chaos: many runs at once, the operator SIGKILLed at random moments and restarted, pods driven
through their stages by the fake kubelet. For every run: one Job, and a Labelbox timeline that
never goes backwards, has nothing after its final status, repeats a status at most once per
crash, and ends in COMPLETE. Also with a Labelbox that takes each update and answers late (a
kill then lands while Labelbox has the update and the operator does not know), and during a
burst of creations (the first status writes held by the burst gate), and with live training
progress on: each training pod reports its progress to the operator's endpoint, with a token the
API server bound to it, while the operator is killed; the progress updates at Labelbox never go
back, and none comes with or after the final status.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from lbtrain import contract
from lbtrain.kube import JOBS, MODELRUNS, PODS, ApiError, KubeClient
from lbtrain.resources.models import LabelboxStatus
from lbtrain.resources.names import LABEL_MODEL_RUN
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.liveprogress import issue_token
from lbtrain_dev.testbed.controlplane import free_port
from lbtrain_dev.testbed.fake_kubelet import FakeKubelet

from ..e2e.helpers import progress_of
from .test_operator_lifecycle import FULL

pytestmark = [
    pytest.mark.testbed,
    pytest.mark.slow,
    pytest.mark.usefixtures("crds", "lbsecret"),
    pytest.mark.timeout(600),
]
RANK = {s.value: s.rank for s in LabelboxStatus}


@dataclass(frozen=True)
class Chaos:
    runs: int
    kills: int
    create_over_s: float  # runs are created evenly over this time (0: all at once, a burst)
    kill_over_s: float  # kills fall at random moments in this window
    slow_labelbox_s: float = 0.0  # every update is taken at once and answered this much later
    progress: int = 0  # live progress reports each training pod sends (docs/progress.md)


STEADY = Chaos(runs=100, kills=20, create_over_s=40, kill_over_s=70)
SLOW_LABELBOX = Chaos(runs=60, kills=12, create_over_s=25, kill_over_s=50, slow_labelbox_s=2.5)
BURST = Chaos(runs=80, kills=12, create_over_s=0, kill_over_s=40)
LIMIT = aiohttp.ClientTimeout(total=2)
PROGRESS = Chaos(runs=40, kills=10, create_over_s=20, kill_over_s=40, progress=4)


async def report_progress(
    kube: KubeClient, pod: dict[str, Any], url: str, reports: int, rng: random.Random
) -> None:
    """Rank 0 of a training pod: `reports` reports, 0.2-0.5 s apart, with a token bound to the
    pod; a report the operator does not take (it is down) is lost, as in the trainer."""
    token = await issue_token(kube, pod["metadata"]["namespace"], pod)
    run_id = fake_cuid(pod["metadata"]["labels"][LABEL_MODEL_RUN])
    async with aiohttp.ClientSession() as session:
        for epoch in range(1, reports + 1):
            await asyncio.sleep(rng.uniform(0.2, 0.5))
            body = {
                "modelRunId": run_id,
                "epoch": epoch,
                "epochs": reports,
                "step": epoch,
                "steps": reports,
                "trainLoss": 1.0 / epoch,
                "validationMetric": None,
                "validationValue": None,
                "examplesPerSecond": 10.0,
                "etaSeconds": float(reports - epoch),
                "measuredAt": dt.datetime.now(dt.UTC).isoformat(),
            }
            headers = {"Authorization": f"Bearer {token}"}
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.post(url, json=body, headers=headers, timeout=LIMIT) as answer:
                    await answer.read()


async def drive_pods(
    kubelet: FakeKubelet,
    rng: random.Random,
    stop: asyncio.Event,
    progress: tuple[KubeClient, str, int] | None = None,
) -> None:
    """The kubelet: every new pod is scheduled and run through its stages, 0.2-1.5 s each;
    with `progress` (client, endpoint URL, reports), the train stage reports progress too."""
    seen: set[str] = set()
    tasks: list[asyncio.Task[None]] = []

    async def run(pod: dict[str, Any]) -> None:
        await kubelet.schedule(pod)
        for stage in ("export", "prepare", "train"):
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            await kubelet.run_stage(pod, stage)
        if progress is not None:
            await report_progress(progress[0], pod, progress[1], progress[2], rng)
        await asyncio.sleep(rng.uniform(0.2, 1.5))
        await kubelet.succeed(pod)

    while not stop.is_set():
        for pod in await kubelet.pods():
            name = pod["metadata"]["name"]
            if name not in seen:
                seen.add(name)
                tasks.append(asyncio.create_task(run(pod)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.3)
    await asyncio.gather(*tasks)


async def create_runs(make_run: Any, chaos: Chaos) -> list[str]:
    names = [f"chaos-{i:03d}" for i in range(chaos.runs)]
    gap = chaos.create_over_s / chaos.runs
    for name in names:
        for _ in range(50):  # the API server may answer 429 while the operator restarts
            try:
                await make_run(name)
                break
            except ApiError as exc:
                if exc.status != 429:
                    raise
                await asyncio.sleep(0.2)
        if gap:
            await asyncio.sleep(gap)
    return names


async def all_complete(kube: KubeClient, namespace: str, names: list[str], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        items = (await kube.list(MODELRUNS, namespace))["items"]
        done = {
            mr["metadata"]["name"]
            for mr in items
            if ((mr.get("status") or {}).get("labelbox") or {}).get("acknowledged") == "COMPLETE"
        }
        if done >= set(names):
            return
        if asyncio.get_running_loop().time() > deadline:
            missing = sorted(set(names) - done)
            raise AssertionError(f"{len(missing)} runs never showed COMPLETE: {missing[:10]}")
        await asyncio.sleep(1)


def timeline_faults(updates: list[Any], kills: int) -> tuple[list[str], int]:
    """What is wrong with one run's Labelbox timeline (empty: nothing), and its repeats."""
    faults: list[str] = []
    statuses = [u.status for u in updates]
    ranks = [RANK[s] for s in statuses]
    if ranks != sorted(ranks):
        faults.append(f"goes backwards: {' '.join(statuses)}")
    final_at = next((i for i, s in enumerate(statuses) if s in ("COMPLETE", "FAILED")), None)
    if final_at is None:
        faults.append(f"no final status: {' '.join(statuses)}")
    else:
        first = updates[final_at]
        for later in updates[final_at + 1 :]:
            if (later.status, later.metadata, later.error_message) != (
                first.status,
                first.metadata,
                first.error_message,
            ):
                faults.append(f"something after {first.status}: {' '.join(statuses)}")
                break
    if list(dict.fromkeys(statuses)) != FULL:
        faults.append(f"not the full timeline: {' '.join(statuses)}")
    # A repeat is the same call again; a newer progress is a new call of the same status.
    told = [progress_of(u) for u in updates]
    stamps = [p["measuredAt"] for p in told if p]
    if stamps != sorted(stamps):
        faults.append(f"progress goes backwards: {stamps}")
    if final_at is not None and any(told[final_at:]):
        faults.append(f"progress with or after the final status: {' '.join(statuses)}")
    repeats = sum(
        1
        for (a, pa), (b, pb) in itertools.pairwise(zip(statuses, told, strict=True))
        if a == b and pa == pb
    )
    if repeats > kills:
        faults.append(f"{repeats} repeats for {kills} crashes: {' '.join(statuses)}")
    return faults, repeats


@pytest.mark.parametrize(
    "chaos", [STEADY, SLOW_LABELBOX, BURST, PROGRESS], ids=["steady", "slow", "burst", "progress"]
)
async def test_random_kills_never_turn_labelbox_back(
    chaos: Chaos,
    kube,
    namespace,
    kubelet: FakeKubelet,
    fake_labelbox,
    start_operator,
    make_template,
    make_run,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = random.Random(f"chaos-{chaos}")
    await make_template()
    if chaos.slow_labelbox_s:
        fake_labelbox.timeout_hang_s = chaos.slow_labelbox_s
        fake_labelbox.fail("slow", operations=["updateTrainingPipeline"])
    port = free_port()
    url = f"http://127.0.0.1:{port}{contract.PROGRESS_PATH}"
    extra = [f"--progress-port={port}", f"--progress-url={url}", "--progress-interval=0"]
    op = start_operator(*extra)
    stop = asyncio.Event()
    progress = (kube, url, chaos.progress) if chaos.progress else None
    kubelet_task = asyncio.create_task(drive_pods(kubelet, rng, stop, progress))

    async def killer() -> int:
        nonlocal op
        moments = sorted(rng.uniform(0, chaos.kill_over_s) for _ in range(chaos.kills))
        started = asyncio.get_running_loop().time()
        for moment in moments:
            await asyncio.sleep(max(0.0, started + moment - asyncio.get_running_loop().time()))
            op.kill()
            await asyncio.sleep(rng.uniform(0, 2))
            op = start_operator(*extra)
        return len(moments)

    kill_task = asyncio.create_task(killer())
    names = await create_runs(make_run, chaos)
    kills = await kill_task
    await all_complete(kube, namespace, names, timeout=240)
    stop.set()
    await kubelet_task

    jobs = Counter(
        j["metadata"]["labels"].get(LABEL_MODEL_RUN)
        for j in (await kube.list(JOBS, namespace))["items"]
    )
    pods = (await kube.list(PODS, namespace))["items"]
    faults: dict[str, list[str]] = {}
    repeats = 0
    for name in names:
        problems, repeated = timeline_faults(fake_labelbox.status_updates(fake_cuid(name)), kills)
        repeats += repeated
        if jobs[name] != 1:
            problems.append(f"{jobs[name]} Jobs")
        if problems:
            faults[name] = problems
    with capsys.disabled():
        print(
            f"\nchaos {chaos}: {kills} kills, {len(names)} runs, {len(pods)} pods, "
            f"{repeats} repeated statuses at Labelbox, "
            f"{sum(len(fake_labelbox.status_updates(fake_cuid(n))) for n in names)} updates in all"
        )
    assert kills == chaos.kills
    assert not faults, dict(itertools.islice(faults.items(), 10))
    if chaos.progress:
        # Progress was exercised: it reached Labelbox for some runs. Reports sent while the
        # operator is down (much of the kill window: each restart takes seconds) are lost, as a
        # trainer's are, and a run's whole training here lasts about two seconds.
        told = [
            n for n in names if any(map(progress_of, fake_labelbox.status_updates(fake_cuid(n))))
        ]
        with capsys.disabled():
            print(f"progress reached Labelbox for {len(told)} of {len(names)} runs")
        assert len(told) >= 3, len(told)
