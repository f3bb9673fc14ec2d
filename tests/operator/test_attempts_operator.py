"""Gang retry by the real operator, with the real Job controller and a fake kubelet.

A run of two pods: rank 1 fails, the Job controller fails the attempt (backoffLimit 0) and the
operator starts attempt 2 under `<job>-a2`, deletes the first attempt's Job, and says which pod
failed on which node; an eviction in attempt 2 starts attempt 3 without spending the budget;
attempt 3 completes, and Labelbox saw one ordered timeline whose metadata never went back to
an earlier attempt. A second run spends its whole budget and ends FAILED once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from lbtrain.kube import JOBS, PODS, KubeClient, NotFound
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed.fake_kubelet import FakeKubelet

from .test_operator_lifecycle import until, until_acknowledged

pytestmark = [pytest.mark.testbed, pytest.mark.usefixtures("crds", "lbsecret")]

FULL = ["EXPORTING_DATA", "PREPARING_DATA", "TRAINING_MODEL", "COMPLETE"]
GANG = {
    "gpus": 0,
    "numNodes": 2,
    "backoffLimit": 1,
    "artifacts": {"destination": "s3://models/runs/{modelRunId}"},
}


def by_index(pods: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    key = "batch.kubernetes.io/job-completion-index"
    return {int(p["metadata"]["annotations"][key]): p for p in pods}


async def attempt_pods(kubelet: FakeKubelet, job: str) -> dict[int, dict[str, Any]]:
    pods = await kubelet.wait_for_pods(f"batch.kubernetes.io/job-name={job}", 2, pending_only=True)
    return by_index(pods)


async def train(kubelet: FakeKubelet, pods: dict[int, dict[str, Any]]) -> None:
    for pod in pods.values():
        await kubelet.schedule(pod)
    for stage in ("export", "prepare", "train"):
        for pod in pods.values():
            await kubelet.run_stage(pod, stage)


async def start_gang(
    kubelet: FakeKubelet,
    start_operator: Any,
    make_template: Any,
    make_run: Any,
    name: str,
    **template: Any,
) -> dict[int, dict[str, Any]]:
    """Start the operator on a run of two pods (`GANG`, with `template` over it) and train its
    first attempt's pods up to the train stage; answer them by completion index."""
    await make_template(**{**GANG, **template})
    start_operator()
    await make_run(name)
    pods = await attempt_pods(kubelet, f"{name}-train")
    await train(kubelet, pods)
    return pods


async def others_stop(
    kube: KubeClient, namespace: str, kubelet: FakeKubelet, pod: dict[str, Any]
) -> None:
    """After a rank ended, the Job controller stops `pod`, another rank of the attempt, and its
    container ends on SIGTERM (exit code 143)."""
    await stopped(kube, namespace, pod)
    await kubelet.fail(pod, exit_code=143)


def timeline(fake: FakeLabelbox, run_id: str) -> list[str]:
    out: list[str] = []
    for status in fake.statuses(run_id):
        if not out or out[-1] != status:
            out.append(status)
    return out


async def test_a_failed_attempt_is_retried_as_a_whole_and_a_disruption_spends_nothing(
    kube: KubeClient,
    namespace: str,
    kubelet: FakeKubelet,
    fake_labelbox: FakeLabelbox,
    start_operator: Any,
    make_template: Any,
    make_run: Any,
) -> None:
    first = await start_gang(kubelet, start_operator, make_template, make_run, "gang")
    st = await until(kube, namespace, "gang", lambda s: s.get("phase") == "Training")
    assert (st["workersUp"], st["attempt"], st["failedAttempts"]) == ("2/2", 1, 0)
    assert [(w["index"], w["stage"], w["node"]) for w in st["workers"]] == [
        (0, "train", "testbed-node-1"),
        (1, "train", "testbed-node-1"),
    ]
    await until_acknowledged(kube, namespace, "gang", "TRAINING_MODEL")

    # Rank 1 is killed; the Job controller stops rank 0 (the kubelet reports it ended).
    await kubelet.fail(first[1], exit_code=137)
    await others_stop(kube, namespace, kubelet, first[0])
    st = await until(kube, namespace, "gang", lambda s: s.get("attempt") == 2)
    assert (st["reason"], st["failedAttempts"], st["jobName"]) == ("Retrying", 1, "gang-train-a2")
    assert (
        "pod gang-train-1-" in st["message"] and "(index 1) on node testbed-node-1" in st["message"]
    )
    assert "code 137" in st["message"] and "0 of backoffLimit 1 retries left" in st["message"]
    second_job = await kube.get(JOBS, "gang-train-a2", namespace)
    train_env = second_job["spec"]["template"]["spec"]["containers"][0]["env"]
    master = {e["name"]: e.get("value") for e in train_env}["PET_MASTER_ADDR"]
    assert master == "gang-train-a2-0.rdzv-gang-train-a2"
    await deleted(kube, namespace, "gang-train")  # the first attempt's Job

    # Attempt 2: rank 0 is evicted. A disruption: attempt 3, nothing spent.
    second = await attempt_pods(kubelet, "gang-train-a2")
    await train(kubelet, second)
    await kubelet.evict(second[0])
    await others_stop(kube, namespace, kubelet, second[1])
    st = await until(kube, namespace, "gang", lambda s: s.get("attempt") == 3)
    assert (st["reason"], st["failedAttempts"]) == ("Disrupted", 1)

    third = await attempt_pods(kubelet, "gang-train-a3")
    await train(kubelet, third)
    summary = {"accuracy": 0.9}
    await kubelet.succeed(third[1])
    await kubelet.succeed(third[0], message=json.dumps(summary))
    st = await until_acknowledged(kube, namespace, "gang", "COMPLETE")
    assert (st["phase"], st["attempt"], st["failedAttempts"]) == ("Succeeded", 3, 1)
    assert st["summary"] == summary  # rank 0's
    run_id = fake_cuid("gang")
    assert timeline(fake_labelbox, run_id) == FULL
    attempts = [int((u.metadata or {})["attempt"]) for u in fake_labelbox.status_updates(run_id)]
    assert attempts == sorted(attempts) and attempts[-1] == 3, attempts


async def stopped(kube: KubeClient, namespace: str, pod: dict[str, Any]) -> None:
    """Wait until the Job controller deletes the pod (it stops the attempt's other ranks)."""
    name = pod["metadata"]["name"]
    await kube.wait_for(
        PODS, name, namespace, lambda p: bool(p["metadata"].get("deletionTimestamp"))
    )


async def deleted(kube: KubeClient, namespace: str, job: str) -> None:
    """Wait until the Job is deleted, or being deleted (its pods go in the background)."""
    for _ in range(300):
        try:
            found = await kube.get(JOBS, job, namespace)
        except NotFound:
            return
        if found["metadata"].get("deletionTimestamp"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"Job {job} was not deleted")


async def test_the_last_attempt_failing_fails_the_run_once(
    kube: KubeClient,
    namespace: str,
    kubelet: FakeKubelet,
    fake_labelbox: FakeLabelbox,
    start_operator: Any,
    make_template: Any,
    make_run: Any,
) -> None:
    pods = await start_gang(
        kubelet, start_operator, make_template, make_run, "doomed", backoffLimit=0
    )
    await kubelet.fail(pods[0], exit_code=1, message="CUDA error")
    await others_stop(kube, namespace, kubelet, pods[1])
    st = await until_acknowledged(kube, namespace, "doomed", "FAILED")
    assert (st["phase"], st["reason"], st["attempt"], st["failedAttempts"]) == (
        "Failed",
        "BackoffLimitExceeded",
        1,
        1,
    )
    assert "(index 0) on node testbed-node-1" in st["message"]
    assert "no retries are left (backoffLimit 0)" in st["message"]
    with pytest.raises(NotFound):
        await kube.get(JOBS, "doomed-train-a2", namespace)
    assert fake_labelbox.statuses(fake_cuid("doomed")).count("FAILED") == 1
