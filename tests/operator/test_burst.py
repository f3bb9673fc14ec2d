"""Jobs first during a burst: the policy alone (a fake clock), then the operator on the testbed
holding a burst's status writes and Events until Job creation goes quiet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from lbtrain.kube import EVENTS, JOBS, MODELRUNS, KubeClient
from lbtrain.resources.names import LABEL_MODEL_RUN
from lbtrain_operator.burst import BurstGate

from .test_operator_lifecycle import until


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_run_alone_is_never_held() -> None:
    clock = Clock()
    gate = BurstGate(quiet_s=1.0, max_hold_s=30.0, clock=clock)
    assert gate.job_created() is False  # the first Job: no burst yet
    clock.now += 5.0
    assert gate.job_created() is False  # the next one long after: still alone


def test_jobs_created_in_quick_succession_are_a_burst_held_until_quiet() -> None:
    clock = Clock()
    gate = BurstGate(quiet_s=1.0, max_hold_s=30.0, clock=clock)
    gate.job_created()
    clock.now += 0.2
    assert gate.job_created() is True
    held_since = clock.now
    assert gate.hold_for(held_since) == pytest.approx(1.0)
    clock.now += 0.5
    gate.job_created()  # the burst goes on: the quiet deadline moves
    assert gate.hold_for(held_since) == pytest.approx(1.0)
    clock.now += 1.0
    assert gate.hold_for(held_since) == 0.0


def test_a_burst_that_never_goes_quiet_holds_at_most_max_hold() -> None:
    clock = Clock()
    gate = BurstGate(quiet_s=1.0, max_hold_s=3.0, clock=clock)
    gate.job_created()
    held_since = clock.now
    for _ in range(10):  # a Job every half second, for five seconds
        clock.now += 0.5
        gate.job_created()
        if clock.now - held_since < 3.0:
            assert gate.hold_for(held_since) > 0
    assert gate.hold_for(held_since) == 0.0


def test_quiet_zero_turns_holding_off_and_negative_settings_are_refused() -> None:
    clock = Clock()
    gate = BurstGate(quiet_s=0.0, max_hold_s=30.0, clock=clock)
    assert [gate.job_created() for _ in range(3)] == [False, False, False]
    assert gate.hold_for(clock.now) == 0.0
    with pytest.raises(ValueError, match="must not be negative"):
        BurstGate(quiet_s=-1.0, max_hold_s=30.0)


async def test_quiet_returns_once_job_creation_stops() -> None:
    gate = BurstGate(quiet_s=0.2, max_hold_s=30.0)
    gate.job_created()
    started = time.monotonic()

    async def more_jobs() -> None:
        for _ in range(3):
            await asyncio.sleep(0.1)
            gate.job_created()

    await asyncio.gather(gate.quiet(), more_jobs())
    # Three more Jobs 0.1 s apart, then 0.2 s of quiet: not before about 0.5 s.
    assert time.monotonic() - started >= 0.45


# --- the operator on the testbed ------------------------------------------------------------
RUNS = ("burst-a", "burst-b", "burst-c", "burst-d")


async def _events(kube: KubeClient, ns: str, run: str) -> set[str]:
    items = (await kube.list(EVENTS, ns, field_selector=f"involvedObject.name={run}"))["items"]
    return {e["reason"] for e in items}


async def _burst_until_every_job(
    kube: KubeClient, ns: str, make_run: Callable[..., Awaitable[Any]]
) -> None:
    """Create every run of RUNS at once; return when each one's Job exists."""
    await asyncio.gather(*(make_run(name) for name in RUNS))
    for name in RUNS:
        await kube.wait_for(JOBS, f"{name}-train", ns, lambda j: True)


@pytest.mark.testbed
@pytest.mark.usefixtures("crds", "lbsecret")
async def test_a_burst_gets_its_jobs_first_and_its_statuses_once_quiet(
    kube, namespace, start_operator, make_template, make_run
) -> None:
    await make_template()
    start_operator("--burst-quiet=4")
    await _burst_until_every_job(kube, namespace, make_run)
    # Every Job exists; the runs whose Jobs came in the burst have not been written yet.
    statuses = [(await kube.get(MODELRUNS, name, namespace)).get("status") or {} for name in RUNS]
    held = [name for name, st in zip(RUNS, statuses, strict=True) if not st.get("jobName")]
    assert len(held) >= len(RUNS) - 1, statuses
    for name in held:
        assert "JobCreated" not in await _events(kube, namespace, name)
    # Once Job creation has been quiet for 4 s, each status and Event arrives.
    for name in RUNS:
        st = await until(kube, namespace, name, lambda s: s.get("jobName"), timeout=20)
        assert (st["phase"], st["jobName"]) == ("Pending", f"{name}-train")
    for name in RUNS:
        for _ in range(50):
            if "JobCreated" in await _events(kube, namespace, name):
                break
            await asyncio.sleep(0.1)
        assert "JobCreated" in await _events(kube, namespace, name)


@pytest.mark.testbed
@pytest.mark.usefixtures("crds", "lbsecret")
async def test_an_operator_killed_while_holding_loses_nothing_and_makes_no_second_job(
    kube, namespace, start_operator, make_template, make_run
) -> None:
    await make_template()
    op = start_operator("--burst-quiet=60")
    await _burst_until_every_job(kube, namespace, make_run)
    op.kill()  # during the hold: the held statuses were never written
    start_operator("--burst-quiet=0")
    for name in RUNS:
        st = await until(kube, namespace, name, lambda s: s.get("jobName"), timeout=20)
        assert (st["phase"], st["jobName"]) == ("Pending", f"{name}-train")
        jobs = await kube.list(JOBS, namespace, label_selector=f"{LABEL_MODEL_RUN}={name}")
        assert len(jobs["items"]) == 1


def test_operator_flags_set_the_burst_hold_and_refuse_negative_seconds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lbtrain_operator.cli import parser

    args = parser().parse_args(["--burst-quiet=2.5", "--burst-max-hold=10"])
    assert (args.burst_quiet, args.burst_max_hold) == (2.5, 10.0)
    assert parser().parse_args([]).burst_quiet == 1.0
    for bad in ("--burst-quiet=-1", "--burst-max-hold=nan"):
        with pytest.raises(SystemExit) as exit_info:
            parser().parse_args([bad])
        assert exit_info.value.code == 2
        assert "must be a number of seconds >= 0" in capsys.readouterr().err
