"""Restarts and outages: the operator may die at any point, Labelbox may be down for any time;
neither makes a second Job, loses a status, or shows Labelbox statuses out of order."""

from __future__ import annotations

import asyncio

import pytest

from lbtrain.kube import JOBS, MODELRUNS
from lbtrain.resources.names import LABEL_MODEL_RUN
from lbtrain_dev.ids import fake_cuid

from .test_operator_lifecycle import (
    FULL,
    events_eventually,
    statuses_settle,
    until,
    until_acknowledged,
)

pytestmark = [pytest.mark.testbed, pytest.mark.usefixtures("crds", "lbsecret")]


async def test_restart_at_every_stage_makes_one_job_and_one_timeline(
    kube, namespace, kubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template()
    op = start_operator()
    await make_run("phoenix")
    await kube.wait_for(JOBS, "phoenix-train", namespace, lambda j: True)
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=phoenix")
    await kubelet.schedule(pod)
    for stage in ("export", "prepare", "train"):
        op.kill()  # SIGKILL between observations: nothing is flushed
        await kubelet.run_stage(pod, stage)
        op = start_operator()
        phase = {"export": "Exporting", "prepare": "Preparing", "train": "Training"}[stage]
        await until(kube, namespace, "phoenix", lambda s, p=phase: s.get("phase") == p)
    op.kill()
    await kubelet.succeed(pod)
    start_operator()
    await until_acknowledged(kube, namespace, "phoenix", "COMPLETE")
    jobs = (await kube.list(JOBS, namespace, label_selector=f"{LABEL_MODEL_RUN}=phoenix"))["items"]
    assert len(jobs) == 1
    # In order, every stage, ending in COMPLETE; a kill right after a call and before its
    # answer was stored costs one repeat of that status, never an older one.
    got = fake_labelbox.statuses(fake_cuid("phoenix"))
    assert list(dict.fromkeys(got)) == FULL and got[-1] == "COMPLETE", got
    assert [FULL.index(s) for s in got] == sorted(FULL.index(s) for s in got), got
    assert len(got) - len(FULL) <= 4, got  # four kills


async def test_restart_right_after_job_creation_does_not_create_a_second_job(
    kube, namespace, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template()
    op = start_operator()
    await make_run("twice")
    await kube.wait_for(JOBS, "twice-train", namespace, lambda j: True)
    op.kill()
    start_operator()
    await asyncio.sleep(3)  # more than one resync interval of the new operator
    jobs = (await kube.list(JOBS, namespace, label_selector=f"{LABEL_MODEL_RUN}=twice"))["items"]
    assert len(jobs) == 1


async def test_labelbox_outage_never_blocks_training_and_the_final_status_arrives(
    kube, namespace, kubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template()
    start_operator()
    fake_labelbox.fail("conn_reset")  # Labelbox unreachable from the start
    await make_run("outage")
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=outage")
    await kubelet.schedule(pod)
    for stage in ("export", "prepare", "train"):
        await kubelet.run_stage(pod, stage)
    await kubelet.succeed(pod)
    st = await until(kube, namespace, "outage", lambda s: s.get("phase") == "Succeeded")
    box = st["labelbox"]
    assert box["desired"] == "COMPLETE" and box.get("acknowledged") is None
    assert [box["sending"]["status"], *box["pending"]] == FULL  # the first in flight
    await until(kube, namespace, "outage", lambda s: s["labelbox"].get("attempts", 0) >= 2)
    st = (await kube.get(MODELRUNS, "outage", namespace))["status"]
    assert st["labelbox"]["lastError"] and "test-key" not in st["labelbox"]["lastError"]
    assert fake_labelbox.statuses(fake_cuid("outage")) == []
    fake_labelbox.heal()
    await statuses_settle(fake_labelbox, fake_cuid("outage"), FULL, timeout=30)
    st = await until(
        kube, namespace, "outage", lambda s: s["labelbox"].get("acknowledged") == "COMPLETE"
    )
    assert st["labelbox"]["pending"] == [] and st["labelbox"]["attempts"] == 0
    assert st["labelbox"].get("sending") is None


async def test_labelbox_5xx_burst_is_absorbed(
    kube, namespace, kubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template()
    start_operator()
    fake_labelbox.fail("5xx", times=4)  # the SDK's own retries (1, 2, 4, 8 s) ride it out
    await make_run("burst")
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=burst")
    await kubelet.schedule(pod)
    await kubelet.run_stage(pod, "export")
    await kubelet.run_stage(pod, "prepare")
    await statuses_settle(
        fake_labelbox, fake_cuid("burst"), ["EXPORTING_DATA", "PREPARING_DATA"], timeout=60
    )


async def test_unknown_model_run_at_labelbox_is_detected_not_swallowed(
    kube, namespace, kubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template()
    start_operator()
    await make_run("ghost", model_run_id=fake_cuid("not-in-labelbox"), register=False)
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=ghost")
    await kubelet.schedule(pod)
    await kubelet.run_stage(pod, "export")
    st = await until(kube, namespace, "ghost", lambda s: (s.get("labelbox") or {}).get("lastError"))
    assert f"no model run '{fake_cuid('not-in-labelbox')}'" in st["labelbox"]["lastError"]
    assert st["phase"] == "Exporting"  # training is not blocked by it
    events = await events_eventually(
        kube,
        namespace,
        "involvedObject.name=ghost",
        lambda es: any(e["reason"] == "LabelboxModelRunNotFound" for e in es),
    )
    warning = [e for e in events if e["reason"] == "LabelboxModelRunNotFound"]
    assert warning[0]["type"] == "Warning"
    assert fake_labelbox.statuses(fake_cuid("not-in-labelbox")) == []
