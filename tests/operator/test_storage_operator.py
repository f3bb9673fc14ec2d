"""Artifact storage through the real operator and a real API server: each run's claim, made
before its Job and never shared with another run; destinations no pod could write; and the
bound on a pod that waits for its volumes, down to the message Labelbox shows."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from lbtrain.kube import EVENTS, JOBS, MODELRUNS, PERSISTENTVOLUMECLAIMS, KubeClient, NotFound
from lbtrain.resources.models import ModelRun, TrainingTemplate
from lbtrain.resources.names import ANNOTATION_MODEL_RUN_UID, LABEL_MODEL_RUN
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed.fake_kubelet import FakeKubelet
from lbtrain_operator import storage

from .test_operator_lifecycle import statuses_settle, until, until_acknowledged

pytestmark = [pytest.mark.testbed, pytest.mark.usefixtures("crds", "lbsecret")]

IMAGE = "127.0.0.1:1/lbtrain/trainer:test"  # a closed port: nothing is ever pulled
CLAIM_SPEC = {
    "accessModes": ["ReadWriteOnce"],
    "storageClassName": "lbtrain-test-none",  # no provisioner: the claims stay Pending
    "resources": {"requests": {"storage": "5Gi"}},
}


def claim_template(**artifacts: Any) -> dict[str, Any]:
    return {"image": IMAGE, "artifacts": {"volumeClaimTemplate": {"spec": CLAIM_SPEC}, **artifacts}}


def pod_volumes(job: dict[str, Any]) -> dict[str, Any]:
    return {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}


async def no_job(kube: KubeClient, namespace: str, run: str) -> None:
    with pytest.raises(NotFound):
        await kube.get(JOBS, f"{run}-train", namespace)


async def test_concurrent_runs_each_get_their_own_claim_before_their_job(
    kube, namespace, start_operator, make_template, make_run
) -> None:
    await make_template(**claim_template())
    start_operator()
    runs = {name: await make_run(name) for name in ("run-a", "run-b")}
    for name, body in runs.items():
        job = await kube.wait_for(JOBS, f"{name}-train", namespace, lambda j: True, timeout=30)
        claim = await kube.get(PERSISTENTVOLUMECLAIMS, f"{name}-artifacts", namespace)
        assert claim["spec"]["storageClassName"] == "lbtrain-test-none"
        assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
        assert claim["metadata"]["labels"][LABEL_MODEL_RUN] == name
        [owner] = claim["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "ModelRun",
            name,
            body["metadata"]["uid"],
        ), "retention Delete: the claim goes with its run"
        volume = pod_volumes(job)["run-artifacts"]
        assert volume["persistentVolumeClaim"] == {"claimName": f"{name}-artifacts"}
        env = {
            e["name"]: e.get("value")
            for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["LBTRAIN_ARTIFACTS"] == f"/artifacts/{fake_cuid(name)}"
    st = await until(kube, namespace, "run-a", lambda s: s.get("jobName") == "run-a-train")
    assert st["phase"] == "Pending"


async def test_a_retained_claim_has_no_owner_and_outlives_its_run(
    kube, namespace, start_operator, make_template, make_run
) -> None:
    await make_template(**claim_template(retention="Retain"))
    start_operator()
    await make_run("keep")
    await kube.wait_for(JOBS, "keep-train", namespace, lambda j: True, timeout=30)
    claim = await kube.get(PERSISTENTVOLUMECLAIMS, "keep-artifacts", namespace)
    assert "ownerReferences" not in claim["metadata"]
    # A new run of the same name later is a different run: the kept weights are not its.
    await kube.delete(MODELRUNS, "keep", namespace)
    for _ in range(300):
        try:
            await kube.get(MODELRUNS, "keep", namespace)
        except NotFound:
            break
        await asyncio.sleep(0.1)
    await make_run("keep", model_run_id=fake_cuid("keep-again"))
    st = await until_acknowledged(kube, namespace, "keep", "FAILED")
    assert (st["phase"], st["reason"]) == ("Failed", "ArtifactClaimTaken")
    assert "keep-artifacts" in st["message"] and "retained it" in st["message"]
    assert (await kube.get(PERSISTENTVOLUMECLAIMS, "keep-artifacts", namespace))["metadata"][
        "uid"
    ] == claim["metadata"]["uid"], "the kept claim is untouched"


async def test_a_claim_of_another_owner_is_never_reused(
    kube, namespace, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template(**claim_template())
    theirs = {"metadata": {"name": "taken-artifacts"}, "spec": CLAIM_SPEC}
    await kube.create(PERSISTENTVOLUMECLAIMS, theirs, namespace)
    start_operator()
    await make_run("taken")
    st = await until_acknowledged(kube, namespace, "taken", "FAILED")
    assert (st["phase"], st["reason"]) == ("Failed", "ArtifactClaimTaken")
    assert "taken-artifacts" in st["message"] and "lbtrain did not create it" in st["message"]
    [update] = fake_labelbox.status_updates(fake_cuid("taken"))
    assert update.error_message.startswith(
        "ArtifactClaimTaken: PersistentVolumeClaim taken-artifacts"
    )
    await no_job(kube, namespace, "taken")


async def test_a_claim_the_server_refuses_fails_the_run_with_its_message(
    kube, namespace, fake_labelbox, start_operator, make_template, make_run
) -> None:
    bad = {"accessModes": ["ReadWriteOnce"], "storageClassName": "x"}  # no storage request
    await make_template(image=IMAGE, artifacts={"volumeClaimTemplate": {"spec": bad}})
    start_operator()
    await make_run("refused")
    st = await until_acknowledged(kube, namespace, "refused", "FAILED")
    assert (st["phase"], st["reason"]) == ("Failed", "ArtifactClaimRejected")
    assert "spec.resources[storage]: Required value" in st["message"]
    assert "artifacts.volumeClaimTemplate" in st["message"]
    [update] = fake_labelbox.status_updates(fake_cuid("refused"))
    assert update.error_message.startswith("ArtifactClaimRejected: the API server refused")
    await no_job(kube, namespace, "refused")


async def test_the_run_s_own_claim_from_an_earlier_operator_is_reused(
    kube, namespace, start_operator, make_template, make_run
) -> None:
    tt = await make_template(**claim_template())
    body = await make_run("again")
    # What an operator that died between the claim and the Job left behind.
    made = storage.build_claim(
        ModelRun.model_validate(body), body["metadata"]["uid"], TrainingTemplate.model_validate(tt)
    )
    assert made is not None
    before = await kube.create(PERSISTENTVOLUMECLAIMS, made, namespace)
    start_operator()
    await kube.wait_for(JOBS, "again-train", namespace, lambda j: True, timeout=30)
    after = await kube.get(PERSISTENTVOLUMECLAIMS, "again-artifacts", namespace)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"]["annotations"][ANNOTATION_MODEL_RUN_UID] == body["metadata"]["uid"]
    st = await until(kube, namespace, "again", lambda s: s.get("jobName") == "again-train")
    assert st["phase"] == "Pending"


async def test_a_destination_no_pod_can_write_fails_before_any_job(
    kube, namespace, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template(image=IMAGE, artifacts={"destination": "/artifacts/{modelRunId}"})
    start_operator()
    await make_run("nowhere")
    st = await until_acknowledged(kube, namespace, "nowhere", "FAILED")
    assert (st["phase"], st["reason"]) == ("Failed", "ArtifactDestinationNotWritable")
    assert f"'/artifacts/{fake_cuid('nowhere')}'" in st["message"]
    assert "/workspace, /tmp" in st["message"]
    [update] = fake_labelbox.status_updates(fake_cuid("nowhere"))
    assert update.error_message.startswith("ArtifactDestinationNotWritable")
    await no_job(kube, namespace, "nowhere")


def stamp(now: dt.datetime) -> str:
    return now.isoformat().replace("+00:00", "Z")


async def test_a_volume_that_cannot_mount_is_shown_then_fails_the_run_past_its_grace(
    kube, namespace, kubelet: FakeKubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template(**claim_template(), volumeGracePeriodSeconds=12)
    start_operator()
    await make_run("stuck")
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=stuck")
    await kubelet.schedule(pod)
    message = (
        'Multi-Attach error for volume "pvc-7" Volume is already used by pod(s) other-train-abc'
    )
    now = stamp(dt.datetime.now(dt.UTC))
    await kube.create(  # what the attach/detach controller posts about the pod
        EVENTS,
        {
            "metadata": {"generateName": "stuck.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod["metadata"]["name"],
                "namespace": namespace,
                "uid": pod["metadata"]["uid"],
            },
            "type": "Warning",
            "reason": "FailedAttachVolume",
            "message": message,
            "source": {"component": "attachdetach-controller"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        },
        namespace,
    )
    st = await until(kube, namespace, "stuck", lambda s: s.get("reason") == "VolumePending")
    assert st["phase"] == "Pending" and message in st["message"]
    st = await until(kube, namespace, "stuck", lambda s: s.get("phase") == "Failed", timeout=40)
    assert st["reason"] == "VolumeFailed" and message in st["message"]
    await kube.wait_for(JOBS, "stuck-train", namespace, lambda j: j["spec"].get("suspend") is True)
    await statuses_settle(fake_labelbox, fake_cuid("stuck"), ["EXPORTING_DATA", "FAILED"])
    final = fake_labelbox.status_updates(fake_cuid("stuck"))[-1]
    assert final.error_message.startswith("VolumeFailed: pod stuck-train-")
    assert "Multi-Attach error" in final.error_message


async def test_an_unbound_claim_shows_the_scheduler_s_words_then_fails_the_run(
    kube, namespace, kubelet: FakeKubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template(**claim_template(), volumeGracePeriodSeconds=8)
    start_operator()
    await make_run("unbound")
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=unbound")
    message = "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."
    await kubelet.unschedulable(pod, message)
    st = await until(kube, namespace, "unbound", lambda s: s.get("reason") == "VolumePending")
    assert st["phase"] == "Pending" and message in st["message"]
    st = await until(kube, namespace, "unbound", lambda s: s.get("phase") == "Failed", timeout=40)
    assert st["reason"] == "VolumeFailed" and message in st["message"]
    await statuses_settle(fake_labelbox, fake_cuid("unbound"), ["EXPORTING_DATA", "FAILED"])
    final = fake_labelbox.status_updates(fake_cuid("unbound"))[-1]
    assert "unbound immediate PersistentVolumeClaims" in final.error_message
