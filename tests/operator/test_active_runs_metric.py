"""lbtrain_modelruns_active{phase} follows the runs through their phases, as scraped from the
operator's real /metrics port: the dashboard's "runs by phase" panel and the alerts on runs
stuck Pending read it."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest

from lbtrain.kube import MODELRUNS
from lbtrain.resources.names import LABEL_MODEL_RUN
from lbtrain_dev.testbed.fake_kubelet import FakeKubelet

from .test_operator_lifecycle import until, until_gone

pytestmark = [pytest.mark.testbed, pytest.mark.usefixtures("crds", "lbsecret")]
PHASES = ("Pending", "Exporting", "Preparing", "Training")


async def active(op: Any) -> dict[str, float]:
    """The gauge's value per phase, as Prometheus would scrape it."""
    code, text = await op.get(op.metrics_port, "/metrics")
    assert code == 200, text
    found = re.findall(r'^lbtrain_modelruns_active\{phase="(\w+)"\} (\S+)$', text, re.M)
    return {phase: float(value) for phase, value in found}


async def active_becomes(op: Any, want: dict[str, float], timeout: float = 15) -> None:
    """Wait until the gauge reads `want` (the phases left out read 0); an operator that is still
    starting does not answer yet."""
    expected = {phase: want.get(phase, 0.0) for phase in PHASES}
    got: dict[str, float] = {}
    for _ in range(int(timeout * 10)):
        try:
            got = await active(op)
        except aiohttp.ClientConnectionError:
            got = {}
        if got == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"lbtrain_modelruns_active: expected {expected}, got {got}")


async def test_active_runs_by_phase_move_with_the_runs(
    kube, namespace, kubelet: FakeKubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template(gpus=1)
    op = start_operator()
    await active_becomes(op, {})  # every phase is a series from the start, at 0
    await make_run("one")
    await make_run("two")
    await active_becomes(op, {"Pending": 2})
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=one")
    await kubelet.schedule(pod)
    for stage, phase in (("export", "Exporting"), ("prepare", "Preparing"), ("train", "Training")):
        await kubelet.run_stage(pod, stage)
        await until(kube, namespace, "one", lambda s, p=phase: s.get("phase") == p)
        await active_becomes(op, {"Pending": 1, phase: 1})
    await kubelet.succeed(pod, message="{}")
    await until(kube, namespace, "one", lambda s: s.get("phase") == "Succeeded")
    await active_becomes(op, {"Pending": 1})
    # A run deleted before it finished leaves the gauge too.
    await kube.delete(MODELRUNS, "two", namespace)
    await until_gone(kube, namespace, "two", "the cancelled run kept its finalizer")
    await active_becomes(op, {})
