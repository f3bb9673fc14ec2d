"""A transition is told to Labelbox first and then stored with Labelbox's answer: one status
write per transition, not two. A slow Labelbox never holds the phase back longer than
`--report-wait`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lbtrain.kube import MODELRUNS, ApiError, KubeClient
from lbtrain.resources.names import LABEL_MODEL_RUN
from lbtrain.testbed.fake_kubelet import FakeKubelet

from .test_operator_lifecycle import FULL, until, until_acknowledged

pytestmark = [pytest.mark.testbed, pytest.mark.usefixtures("crds", "lbsecret")]
STATUS_OF_PHASE = {
    "Exporting": "EXPORTING_DATA",
    "Preparing": "PREPARING_DATA",
    "Training": "TRAINING_MODEL",
    "Succeeded": "COMPLETE",
}


@contextlib.asynccontextmanager
async def stored_statuses(
    kube: KubeClient, ns: str, name: str
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every status the API server stores for the ModelRun inside the block, in order (one per
    watch event); the watch is open when the block starts."""
    stored: list[dict[str, Any]] = []
    for _ in range(50):  # CRDs installed a moment ago answer 429 while their storage starts
        try:
            version = (await kube.list(MODELRUNS, ns))["metadata"]["resourceVersion"]
            break
        except ApiError as exc:
            if exc.status != 429:
                raise
            await asyncio.sleep(0.2)

    async def record() -> None:
        async for event in kube.watch(MODELRUNS, ns, resource_version=version, timeout_seconds=120):
            obj = event.object
            if event.type == "MODIFIED" and obj["metadata"]["name"] == name:
                status = obj.get("status") or {}
                if not stored or stored[-1] != status:
                    stored.append(status)

    recorder = asyncio.create_task(record())
    try:
        yield stored
        await asyncio.sleep(0.5)  # the last write's watch event
    finally:
        recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder


async def test_each_phase_is_stored_together_with_its_labelbox_acknowledgement(
    kube, namespace, kubelet: FakeKubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template()
    start_operator()
    async with stored_statuses(kube, namespace, "fold") as stored:
        await make_run("fold")
        [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=fold")
        await kubelet.schedule(pod)
        for stage, phase in (
            ("export", "Exporting"),
            ("prepare", "Preparing"),
            ("train", "Training"),
        ):
            await kubelet.run_stage(pod, stage)
            await until(kube, namespace, "fold", lambda s, p=phase: s.get("phase") == p)
        await kubelet.succeed(pod)
        await until_acknowledged(kube, namespace, "fold", "COMPLETE")
    assert fake_labelbox.statuses("cl-fold") == FULL
    phases = [s.get("phase") for s in stored]
    assert set(STATUS_OF_PHASE) <= set(phases), phases
    # No stored status shows a phase whose Labelbox status is still waiting to be sent: the
    # user of `kubectl get mr -w` sees each phase arrive already acknowledged by Labelbox.
    for status in stored:
        if status.get("phase") in STATUS_OF_PHASE:
            box = status["labelbox"]
            assert box.get("acknowledged") == STATUS_OF_PHASE[status["phase"]], status
            assert box["pending"] == [], status
    # ... and so no write stores an acknowledgement alone: a phase costs one write, not two.
    for before, after in itertools.pairwise(stored):
        rest = {k: v for k, v in after.items() if k != "labelbox"}
        assert rest != {k: v for k, v in before.items() if k != "labelbox"}, after


async def test_stages_passed_while_labelbox_answered_are_sent_in_order_in_one_write(
    kube, namespace, kubelet: FakeKubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template()
    start_operator("--report-wait=30")
    async with stored_statuses(kube, namespace, "quick") as stored:
        await make_run("quick")
        [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=quick")
        await kubelet.schedule(pod)
        fake_labelbox.timeout_hang_s = 3.0  # EXPORTING_DATA takes three seconds to answer ...
        fake_labelbox.fail("timeout", times=1, operations=["updateTrainingPipeline"])
        await kubelet.run_stage(pod, "export")
        await asyncio.sleep(0.5)
        await kubelet.run_stage(pod, "prepare")  # ... while the pod goes on to train
        await kubelet.run_stage(pod, "train")
        await until_acknowledged(kube, namespace, "quick", "TRAINING_MODEL")
    assert fake_labelbox.statuses("cl-quick") == FULL[:3]
    acknowledged = [s.get("labelbox", {}).get("acknowledged") for s in stored]
    # PREPARING_DATA and TRAINING_MODEL went out in one pass: no write between them.
    assert "PREPARING_DATA" not in acknowledged, acknowledged
    assert acknowledged[-1] == "TRAINING_MODEL" and stored[-1]["phase"] == "Training"


async def test_a_slow_labelbox_does_not_hold_the_phase_back(
    kube, namespace, kubelet: FakeKubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template()
    start_operator("--report-wait=0.5")
    await make_run("slow-lb")
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=slow-lb")
    await kubelet.schedule(pod)
    fake_labelbox.timeout_hang_s = 6.0  # answers, but only after six seconds
    fake_labelbox.fail("timeout", times=1, operations=["updateTrainingPipeline"])
    await kubelet.run_stage(pod, "export")
    st = await until(kube, namespace, "slow-lb", lambda s: s.get("phase") == "Exporting", timeout=5)
    # Stored while Labelbox still holds the report: queued, not acknowledged.
    assert st["labelbox"]["pending"] == ["EXPORTING_DATA"]
    assert st["labelbox"].get("acknowledged") is None
    assert fake_labelbox.statuses("cl-slow-lb") == []
    st = await until_acknowledged(kube, namespace, "slow-lb", "EXPORTING_DATA", timeout=30)
    assert st["labelbox"]["pending"] == []
    assert fake_labelbox.statuses("cl-slow-lb") == ["EXPORTING_DATA"]


def test_report_wait_flag_sets_the_wait_and_refuses_negative_seconds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lbtrain_operator.cli import parser

    assert parser().parse_args([]).report_wait == 2.0
    assert parser().parse_args(["--report-wait=0"]).report_wait == 0.0
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["--report-wait=-1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--report-wait" in err and "must be a number of seconds >= 0" in err
