"""A transition is stored together with the Labelbox call it calls for, before the call is made
(the write ahead that keeps Labelbox's timeline in order across crashes); Labelbox's answer
rides on the next write or follows within `--report-wait`. A slow Labelbox never holds a
phase back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lbtrain.kube import MODELRUNS, ApiError, KubeClient
from lbtrain.resources.names import LABEL_MODEL_RUN
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed.fake_kubelet import FakeKubelet

from .test_operator_lifecycle import FULL, statuses_settle, until, until_acknowledged

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


RANK = {name: i for i, name in enumerate(FULL)}


def on_record(box: dict[str, Any]) -> str | None:
    """The highest status the stored outbox says Labelbox has or may have."""
    if box.get("pending"):
        return str(box["pending"][-1])
    if box.get("sending"):
        return str(box["sending"]["status"])
    return box.get("acknowledged")


async def test_each_phase_is_stored_with_its_labelbox_call_before_the_call(
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
            # Within --report-wait (2 s) Labelbox's answer is stored too, with no other write.
            await until_acknowledged(kube, namespace, "fold", STATUS_OF_PHASE[phase], timeout=10)
        await kubelet.succeed(pod)
        await until_acknowledged(kube, namespace, "fold", "COMPLETE")
    assert fake_labelbox.statuses(fake_cuid("fold")) == FULL
    phases = [s.get("phase") for s in stored]
    assert set(STATUS_OF_PHASE) <= set(phases), phases
    # Every stored phase already has its Labelbox status on record (sent, or being sent): a
    # crash right after any write cannot make a restarted operator send an older status.
    for status in stored:
        if status.get("phase") in STATUS_OF_PHASE:
            assert on_record(status["labelbox"]) == STATUS_OF_PHASE[status["phase"]], status
    # Each stage costs a write ahead and one for Labelbox's answer; nothing else.
    steps = [(s.get("phase"), s.get("reason")) for s in stored]
    for step in set(steps):
        if step[0] in STATUS_OF_PHASE:
            assert steps.count(step) <= 2, steps


async def test_stages_passed_while_labelbox_answered_are_all_sent_in_order(
    kube, namespace, kubelet: FakeKubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template()
    start_operator("--report-wait=30")
    async with stored_statuses(kube, namespace, "quick") as stored:
        await make_run("quick")
        [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=quick")
        await kubelet.schedule(pod)
        fake_labelbox.timeout_hang_s = 3.0  # EXPORTING_DATA takes three seconds to answer ...
        fake_labelbox.fail("slow", times=1, operations=["updateTrainingPipeline"])
        await kubelet.run_stage(pod, "export")
        await asyncio.sleep(0.5)
        await kubelet.run_stage(pod, "prepare")  # ... while the pod goes on to train
        await kubelet.run_stage(pod, "train")
        await statuses_settle(fake_labelbox, fake_cuid("quick"), FULL[:3], timeout=30)
        await kubelet.succeed(pod)
        await until_acknowledged(kube, namespace, "quick", "COMPLETE")
    assert fake_labelbox.statuses(fake_cuid("quick")) == FULL
    records = [on_record(s.get("labelbox") or {}) for s in stored]
    ranks = [RANK[x] for x in records if x is not None]
    assert ranks == sorted(ranks), records
    # With --report-wait=30 the answers ride on the next write: no write of its own.
    acknowledged_alone = [
        (a, b)
        for a, b in itertools.pairwise(stored)
        if {k: v for k, v in a.items() if k != "labelbox"}
        == {k: v for k, v in b.items() if k != "labelbox"}
        and b.get("labelbox", {}).get("acknowledged") != "COMPLETE"
        and a.get("labelbox", {}).get("sending") == b.get("labelbox", {}).get("sending")
    ]
    assert not acknowledged_alone, acknowledged_alone


async def test_a_slow_labelbox_does_not_hold_the_phase_back(
    kube, namespace, kubelet: FakeKubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template()
    start_operator("--report-wait=0.5")
    await make_run("slow-lb")
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=slow-lb")
    await kubelet.schedule(pod)
    fake_labelbox.timeout_hang_s = 6.0  # takes the update, but answers only after six seconds
    fake_labelbox.fail("slow", times=1, operations=["updateTrainingPipeline"])
    await kubelet.run_stage(pod, "export")
    st = await until(kube, namespace, "slow-lb", lambda s: s.get("phase") == "Exporting", timeout=5)
    # Stored ahead of the call, while Labelbox still holds the answer: in flight.
    assert st["labelbox"]["sending"]["status"] == "EXPORTING_DATA"
    assert st["labelbox"].get("acknowledged") is None
    st = await until_acknowledged(kube, namespace, "slow-lb", "EXPORTING_DATA", timeout=30)
    assert st["labelbox"]["pending"] == [] and st["labelbox"].get("sending") is None
    assert fake_labelbox.statuses(fake_cuid("slow-lb")) == ["EXPORTING_DATA"]


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
