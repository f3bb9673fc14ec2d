"""The operator end to end on the testbed: real API server, real Job controller, the fake
kubelet driving pods, the real Labelbox SDK talking to the fake Labelbox."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from lbtrain.kube import EVENTS, JOBS, MODELRUNS, PODS, KubeClient, NotFound
from lbtrain.resources.names import FINALIZER, LABEL_MODEL_RUN
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed.fake_kubelet import FakeKubelet

from .builders import IMAGE

pytestmark = [pytest.mark.testbed, pytest.mark.usefixtures("crds", "lbsecret")]
FULL = ["EXPORTING_DATA", "PREPARING_DATA", "TRAINING_MODEL", "COMPLETE"]


async def until(
    kube: KubeClient, ns: str, name: str, pred: Any, timeout: float = 30
) -> dict[str, Any]:
    """Wait until the ModelRun's status satisfies `pred`; answer the status."""
    mr = await kube.wait_for(
        MODELRUNS, name, ns, lambda mr: pred(mr.get("status") or {}), timeout=timeout
    )
    return dict(mr["status"])


async def until_acknowledged(
    kube: KubeClient, ns: str, name: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    """Wait until the ModelRun's status says Labelbox acknowledged `status`; answer the status."""
    return await until(
        kube,
        ns,
        name,
        lambda s: s.get("labelbox", {}).get("acknowledged") == status,
        timeout=timeout,
    )


async def until_gone(kube: KubeClient, ns: str, name: str, why: str, timeout: float = 30) -> None:
    """Wait until the ModelRun is deleted for good (its finalizer released); else fail with `why`."""
    for _ in range(int(timeout * 10)):
        try:
            await kube.get(MODELRUNS, name, ns)
        except NotFound:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(why)


async def events_eventually(
    kube: KubeClient, ns: str, selector: str, want: Any, timeout: float = 10
) -> list[dict[str, Any]]:
    """The Events matching `selector` once `want(events)` holds (the operator posts Events after
    the status write they describe, so they may trail it a little); else fail with what came."""
    items: list[dict[str, Any]] = []
    for _ in range(int(timeout * 10)):
        items = (await kube.list(EVENTS, ns, field_selector=selector))["items"]
        if want(items):
            return items
        await asyncio.sleep(0.1)
    raise AssertionError(f"events for {selector}: {[e['reason'] for e in items]}")


async def statuses_settle(fake: Any, run_id: str, expected: list[str], timeout: float = 30) -> None:
    for _ in range(int(timeout * 10)):
        if fake.statuses(run_id) == expected:
            return
        await asyncio.sleep(0.1)
    assert fake.statuses(run_id) == expected


async def test_happy_path_job_stages_and_labelbox_timeline(
    kube, namespace, kubelet: FakeKubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template(gpus=1)
    op = start_operator()
    await make_run("happy")
    job = await kube.wait_for(JOBS, "happy-train", namespace, lambda j: True, timeout=30)
    assert job["metadata"]["ownerReferences"][0]["name"] == "happy"
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=happy")
    await kubelet.schedule(pod)
    for stage, phase in (("export", "Exporting"), ("prepare", "Preparing"), ("train", "Training")):
        await kubelet.run_stage(pod, stage)
        st = await until(kube, namespace, "happy", lambda s, p=phase: s.get("phase") == p)
        assert st["podName"] == pod["metadata"]["name"] and st["nodeName"] == "testbed-node-1"
    summary = {"accuracy": 0.91, "artifacts": "/workspace/artifacts/model.pt"}
    await kubelet.succeed(pod, message=json.dumps(summary))
    st = await until_acknowledged(kube, namespace, "happy", "COMPLETE")
    assert (st["phase"], st["reason"]) == ("Succeeded", "Succeeded")
    assert st["summary"] == summary and st["completionTime"]
    assert fake_labelbox.statuses(fake_cuid("happy")) == FULL
    final = fake_labelbox.status_updates(fake_cuid("happy"))[-1]
    assert final.metadata["job"] == "happy-train" and final.metadata["node"] == "testbed-node-1"
    assert final.metadata["summary"] == summary and final.metadata["gpus"] == 1
    assert final.error_message is None
    # Events tell the story in `kubectl describe`.
    story = {"JobCreated", "StageRunning", "Succeeded"}
    await events_eventually(
        kube, namespace, "involvedObject.name=happy", lambda es: story <= {e["reason"] for e in es}
    )
    code, body = await op.get(op.liveness_port, "/healthz")
    assert code == 200, body
    code, metrics = await op.get(op.metrics_port, "/metrics")
    assert 'lbtrain_modelruns_finished_total{phase="Succeeded",reason="Succeeded"} 1.0' in metrics


async def test_template_whose_destination_escapes_fails_without_a_job(
    kube, namespace, kubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template(artifacts={"destination": "/artifacts/../{modelRunId}"})
    start_operator()
    await make_run("escape")
    st = await until_acknowledged(kube, namespace, "escape", "FAILED")
    assert (st["phase"], st["reason"]) == ("Failed", "ArtifactDestinationEscapes")
    assert "'..' path segment" in st["message"] and "artifacts.destination" in st["message"]
    [update] = fake_labelbox.status_updates(fake_cuid("escape"))
    assert update.error_message.startswith("ArtifactDestinationEscapes: artifact destination")
    assert len(update.error_message) <= 255
    with pytest.raises(NotFound):  # nothing ran, so nothing was written anywhere
        await kube.get(JOBS, "escape-train", namespace)
    assert await kubelet.pods(f"{LABEL_MODEL_RUN}=escape") == []


async def test_missing_template_fails_with_known_types(
    kube, namespace, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template("ner")
    start_operator()
    await make_run("nope", model_type="Text_multi_classification")
    st = await until_acknowledged(kube, namespace, "nope", "FAILED")
    assert (st["phase"], st["reason"]) == ("Failed", "TemplateMissing")
    assert "'Text_multi_classification'" in st["message"] and "ner" in st["message"]
    [update] = fake_labelbox.status_updates(fake_cuid("nope"))
    assert update.status == "FAILED" and update.error_message.startswith("TemplateMissing: ")
    assert len(update.error_message) <= 255


async def test_unschedulable_is_visible_and_keeps_the_message(
    kube, namespace, kubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template()
    start_operator()
    await make_run("queued")
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=queued")
    msg = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    await kubelet.unschedulable(pod, msg)
    st = await until(kube, namespace, "queued", lambda s: s.get("reason") == "Unschedulable")
    assert st["phase"] == "Pending" and msg in st["message"]
    await statuses_settle(fake_labelbox, fake_cuid("queued"), ["EXPORTING_DATA"])
    assert msg in fake_labelbox.status_updates(fake_cuid("queued"))[0].metadata["message"]
    # `kubectl get events --field-selector type=Warning` shows why the run waits.
    selector = "involvedObject.name=queued,type=Warning"
    for _ in range(50):
        warnings = (await kube.list(EVENTS, namespace, field_selector=selector))["items"]
        if warnings:
            break
        await asyncio.sleep(0.1)
    assert [(e["reason"], msg in e["message"]) for e in warnings] == [("Unschedulable", True)]


async def test_image_pull_failure_fails_after_grace_and_stops_the_job(
    kube, namespace, kubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    # A grace long enough for the operator to see the back-off inside it on a loaded machine
    # (so the user sees EXPORTING_DATA with the reason first), short enough to keep the test quick.
    await make_template(imagePullGracePeriodSeconds=5)
    start_operator()
    await make_run("pull")
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=pull")
    await kubelet.schedule(pod)
    await kubelet.wait_in(pod, "export", "ImagePullBackOff", f'Back-off pulling image "{IMAGE}"')
    st = await until(kube, namespace, "pull", lambda s: s.get("phase") == "Failed", timeout=40)
    assert st["reason"] == "ImagePullFailed" and IMAGE in st["message"]
    job = await kube.wait_for(
        JOBS, "pull-train", namespace, lambda j: j["spec"].get("suspend") is True
    )
    assert job["spec"]["suspend"] is True
    await statuses_settle(fake_labelbox, fake_cuid("pull"), ["EXPORTING_DATA", "FAILED"])


@pytest.mark.parametrize(
    ("stage", "exit_code", "reason", "expected"),
    [
        ("train", 137, "OOMKilled", "OOMKilled"),
        ("prepare", 65, "Error", "BadInput"),
        ("export", 77, "Error", "ArtifactDestinationEscapes"),
        ("train", 78, "Error", "ArtifactDestinationUnusable"),
    ],
)
async def test_failures_that_end_the_run_at_once(
    kube,
    namespace,
    kubelet,
    fake_labelbox,
    start_operator,
    make_template,
    make_run,
    stage,
    exit_code,
    reason,
    expected,
) -> None:
    # backoffLimit 3: OOM with 0 retries left is the template's choice; bad input never retries.
    await make_template(backoffLimit=0 if expected == "OOMKilled" else 3)
    start_operator()
    await make_run("boom")
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=boom")
    await kubelet.schedule(pod)
    await kubelet.run_stage(pod, stage)
    message = {
        65: json.dumps({"error": "class 'cat' has 1 example; rows: ck1"}),
        77: json.dumps({"error": "artifact destination '/x' is refused: it is not under '/a'"}),
        78: json.dumps(
            {"error": "artifact destination s3://b/x is unusable: its bucket does not exist"}
        ),
    }.get(exit_code, "")
    await kubelet.fail(pod, stage, exit_code=exit_code, reason=reason, message=message)
    st = await until(kube, namespace, "boom", lambda s: s.get("phase") == "Failed")
    assert st["reason"] == expected
    if expected == "BadInput":
        assert "rows: ck1" in st["message"]
    if expected == "ArtifactDestinationEscapes":
        assert st["message"].startswith("artifact destination '/x' is refused")
    if expected == "ArtifactDestinationUnusable":
        assert st["message"].startswith("artifact destination s3://b/x is unusable: its bucket")
    stages = {
        "export": ["EXPORTING_DATA"],
        "prepare": ["EXPORTING_DATA", "PREPARING_DATA"],
        "train": FULL[:3],
    }[stage]
    await statuses_settle(fake_labelbox, fake_cuid("boom"), [*stages, "FAILED"])
    assert fake_labelbox.status_updates(fake_cuid("boom"))[-1].error_message.startswith(expected)
    assert len(await kubelet.pods(f"{LABEL_MODEL_RUN}=boom")) == 1  # not retried


async def test_eviction_is_retried_without_counting(
    kube, namespace, kubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template(backoffLimit=0)
    start_operator()
    await make_run("evict")
    [first] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=evict")
    await kubelet.schedule(first)
    await kubelet.run_stage(first, "train")
    await until(kube, namespace, "evict", lambda s: s.get("phase") == "Training")
    await kubelet.evict(first)
    st = await until(kube, namespace, "evict", lambda s: s.get("reason") == "Disrupted")
    assert "evicted" in st["message"] and st["attempts"] == 0
    pods = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=evict", count=2, timeout=30)
    second = pods[-1]
    await kubelet.schedule(second)
    await kubelet.run_stage(second, "train")
    await kubelet.succeed(second)
    st = await until_acknowledged(kube, namespace, "evict", "COMPLETE")
    assert st["phase"] == "Succeeded" and st["attempts"] == 0
    # Never backwards on the retry; TRAINING_MODEL may be re-sent to say why the run waits.
    updates = fake_labelbox.status_updates(fake_cuid("evict"))
    statuses = [u.status for u in updates]
    assert [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]] == FULL
    resent = [u for u in updates[3:] if u.status == "TRAINING_MODEL"]
    assert resent and "evicted" in resent[0].metadata["message"]


async def test_backoff_limit_exceeded(
    kube, namespace, kubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template(backoffLimit=1)
    start_operator()
    await make_run("flaky")
    for attempt in (1, 2):
        pods = await kubelet.wait_for_pods(
            f"{LABEL_MODEL_RUN}=flaky", count=attempt, pending_only=False
        )
        pod = pods[-1]
        await kubelet.schedule(pod)
        await kubelet.run_stage(pod, "train")
        await kubelet.fail(
            pod, exit_code=1, message="RuntimeError: CUDA error: an illegal memory access"
        )
        if attempt == 1:
            st = await until(kube, namespace, "flaky", lambda s: s.get("reason") == "Retrying")
            assert st["attempts"] == 1
    st = await until(kube, namespace, "flaky", lambda s: s.get("phase") == "Failed")
    assert st["reason"] == "BackoffLimitExceeded" and "illegal memory access" in st["message"]


async def test_deadline_exceeded(
    kube, namespace, kubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template(activeDeadlineSeconds=2)
    start_operator()
    await make_run("slow")
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=slow")
    await kubelet.schedule(pod)
    await kubelet.run_stage(pod, "export")
    st = await until(kube, namespace, "slow", lambda s: s.get("phase") == "Failed", timeout=40)
    assert st["reason"] == "DeadlineExceeded"
    await statuses_settle(fake_labelbox, fake_cuid("slow"), ["EXPORTING_DATA", "FAILED"])


async def test_crash_loop_backoff(
    kube, namespace, kubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template(backoffLimit=1)
    start_operator()
    await make_run("crash")
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=crash")
    await kubelet.schedule(pod)
    await kubelet.run_stage(pod, "train")
    status = {
        "containerStatuses": [
            {
                "name": "train",
                "image": "x",
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 4,
                "state": {
                    "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting"}
                },
            }
        ]
    }
    await kube.patch(
        PODS, pod["metadata"]["name"], {"status": status}, namespace, subresource="status"
    )
    st = await until(kube, namespace, "crash", lambda s: s.get("phase") == "Failed")
    assert st["reason"] == "CrashLoopBackOff" and "back-off 5m0s" in st["message"]


async def test_deleting_a_running_run_cancels_it(
    kube, namespace, kubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template()
    op = start_operator()
    await make_run("cancel")
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=cancel")
    await kubelet.schedule(pod)
    await kubelet.run_stage(pod, "train")
    await until_acknowledged(kube, namespace, "cancel", "TRAINING_MODEL")
    mr = await kube.get(MODELRUNS, "cancel", namespace)
    assert FINALIZER in mr["metadata"]["finalizers"]
    # kopf's diff-base annotation is not written: the operator has no change handlers for it.
    assert not [a for a in mr["metadata"].get("annotations") or {} if "last-handled" in a]
    await kube.delete(MODELRUNS, "cancel", namespace)
    await until_gone(kube, namespace, "cancel", "ModelRun still exists", timeout=20)
    with pytest.raises(NotFound):
        await kube.get(JOBS, "cancel-train", namespace)
    assert fake_labelbox.statuses(fake_cuid("cancel")) == [*FULL[:3], "FAILED"]
    assert fake_labelbox.status_updates(fake_cuid("cancel"))[-1].error_message.startswith(
        "Cancelled"
    )
    # The cancellation's report is measured like every other: four reports, all answered.
    code, metrics = await op.get(op.metrics_port, "/metrics")
    assert code == 200
    assert 'lbtrain_labelbox_report_seconds_count{outcome="ok"} 4.0' in metrics, metrics


async def test_a_run_deleted_before_the_operator_saw_it_is_cancelled_in_labelbox(
    kube, namespace, fake_labelbox, start_operator, make_template
) -> None:
    """The webhook creates ModelRuns with the operator's finalizer, so a run deleted while the
    operator is down (or before it got to the run) still tells Labelbox."""
    from lbtrain_webhook.modelruns import build_model_run
    from lbtrain_webhook.payload import ModelRunRequest

    await make_template()
    run_id = fake_cuid("early")  # a Labelbox id, and so also the ModelRun's name
    fake_labelbox.add_model_run(run_id)
    body = build_model_run(
        ModelRunRequest(run_id, "image_single_classification", fake_cuid("model1"))
    )
    await kube.create(MODELRUNS, body, namespace)
    await kube.delete(MODELRUNS, run_id, namespace)
    held = await kube.get(MODELRUNS, run_id, namespace)
    assert held["metadata"].get("deletionTimestamp"), "the finalizer holds it for the operator"

    start_operator()
    await until_gone(kube, namespace, run_id, "the operator did not release the deleted run")
    await statuses_settle(fake_labelbox, run_id, ["FAILED"])
    assert fake_labelbox.status_updates(run_id)[-1].error_message.startswith("Cancelled")
    with pytest.raises(NotFound):
        await kube.get(JOBS, f"{run_id}-train", namespace)


async def test_deletion_is_not_blocked_forever_when_labelbox_is_down(
    kube, namespace, kubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template()
    start_operator()
    await make_run("stuck")
    await kube.wait_for(JOBS, "stuck-train", namespace, lambda j: True)
    # A run made by hand has no finalizer until the operator adds it (the webhook's runs have
    # it from the start); deleted before that, it would be gone without a word, by design.
    await kube.wait_for(
        MODELRUNS, "stuck", namespace, lambda mr: FINALIZER in mr["metadata"].get("finalizers", [])
    )
    fake_labelbox.fail("conn_reset")
    await kube.delete(MODELRUNS, "stuck", namespace)
    # cancel-report-timeout is 5 s in these tests
    await until_gone(kube, namespace, "stuck", "deletion blocked by an unreachable Labelbox")
    events = await events_eventually(
        kube,
        namespace,
        "involvedObject.name=stuck",
        lambda es: any(e["reason"] == "LabelboxUnreachable" for e in es),
    )
    warnings = [e for e in events if e["reason"] == "LabelboxUnreachable"]
    assert warnings[0]["type"] == "Warning"
    assert warnings[0]["message"].startswith("deleted without telling Labelbox: ")
