"""Artifact storage decided on plain values: each run's claim, whose claim an existing one is,
which destinations a pod can write, and the storage every trainer pod gets."""

from __future__ import annotations

from typing import Any

import pytest

from lbtrain.resources.names import ANNOTATION_MODEL_RUN_UID, LABEL_MODEL_RUN
from lbtrain_operator import admission, storage
from lbtrain_operator.jobspec import build_job
from lbtrain_operator.settings import Settings

from .builders import run, template, template_object

CLAIM = {
    "spec": {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "fast-ssd",
        "resources": {"requests": {"storage": "20Gi"}},
    }
}
CLAIM_T = {"volumeClaimTemplate": CLAIM}


def env_of(job: dict[str, Any]) -> dict[str, str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"])


def test_a_claim_template_gives_the_run_its_own_claim_owned_by_it() -> None:
    t = template(artifacts={"volumeClaimTemplate": {**CLAIM, "metadata": {"labels": {"a": "b"}}}})
    claim = storage.build_claim(run("mr-1"), "uid-1", t)
    assert claim is not None
    meta = claim["metadata"]
    assert (meta["name"], meta["namespace"]) == ("mr-1-artifacts", "ns")
    assert meta["labels"] == {
        "a": "b",
        LABEL_MODEL_RUN: "mr-1",
        "app.kubernetes.io/managed-by": "lbtrain",
    }
    assert meta["annotations"][ANNOTATION_MODEL_RUN_UID] == "uid-1"
    [owner] = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("ModelRun", "mr-1", "uid-1")
    assert claim["spec"] == CLAIM["spec"], "the spec is passed as written"


def test_a_retained_claim_has_no_owner() -> None:
    t = template(artifacts={"volumeClaimTemplate": CLAIM, "retention": "Retain"})
    claim = storage.build_claim(run("mr-1"), "uid-1", t)
    assert claim is not None and "ownerReferences" not in claim["metadata"]
    assert claim["metadata"]["annotations"][ANNOTATION_MODEL_RUN_UID] == "uid-1"


def test_no_claim_template_no_claim() -> None:
    assert storage.build_claim(run(), "uid-1", template()) is None


def test_a_long_run_name_still_gives_a_valid_claim_name() -> None:
    name = storage.claim_name("r" * 253)
    assert len(name) == 253 and name.endswith("-artifacts")
    assert storage.claim_name("r" * 253) != storage.claim_name("r" * 252 + "s")


def test_only_the_run_s_own_claim_is_reused() -> None:
    t = template(artifacts={"volumeClaimTemplate": CLAIM})
    own = storage.build_claim(run("mr-1"), "uid-1", t)
    assert own is not None
    assert storage.claim_owner(own, "mr-1", "uid-1") is None
    # A deleted run of the same name whose claim is not garbage-collected yet.
    owner = storage.claim_owner(own, "mr-1", "uid-2")
    assert owner == "ModelRun mr-1 (uid uid-1)"
    # A retained claim of an earlier run of the same name.
    kept = storage.build_claim(
        run("mr-1"), "uid-0", template(artifacts={**CLAIM_T, "retention": "Retain"})
    )
    assert kept is not None
    assert "earlier ModelRun mr-1 (uid uid-0)" in str(storage.claim_owner(kept, "mr-1", "uid-2"))
    # Somebody's own claim that happens to have the name.
    theirs = {"metadata": {"name": "mr-1-artifacts"}}
    assert "lbtrain did not create it" in str(storage.claim_owner(theirs, "mr-1", "uid-1"))
    # A claim whose label names another run is not this run's, whatever its annotation says.
    mislabelled = {
        "metadata": {
            "labels": {LABEL_MODEL_RUN: "other"},
            "annotations": {ANNOTATION_MODEL_RUN_UID: "uid-1"},
        }
    }
    assert (
        storage.claim_owner(mislabelled, "mr-1", "uid-1")
        == f"ModelRun other (its {LABEL_MODEL_RUN} label)"
    )


def test_the_pod_mounts_its_claim_and_writes_under_it() -> None:
    t = template(artifacts={**CLAIM_T, "mountPath": "/weights"})
    job = build_job(run("mr-1"), "uid-1", t, Settings())
    pod = pod_of(job)
    assert {
        "name": "run-artifacts",
        "persistentVolumeClaim": {"claimName": "mr-1-artifacts"},
    } in pod["volumes"]
    for container in pod["initContainers"] + pod["containers"]:
        assert {"name": "run-artifacts", "mountPath": "/weights"} in container["volumeMounts"]
    env = env_of(job)
    model_run_id = run().spec.model_run_id
    assert env["LBTRAIN_ARTIFACTS"] == f"/weights/{model_run_id}"
    assert env["LBTRAIN_ARTIFACTS_ROOT"] == "/weights"


def test_without_a_claim_the_default_destination_is_the_writable_workspace() -> None:
    job = build_job(run(), "uid-1", template(), Settings(restricted_pods=True))
    env = env_of(job)
    assert env["LBTRAIN_ARTIFACTS"] == f"/workspace/artifacts/{run().spec.model_run_id}"
    assert not any("persistentVolumeClaim" in v for v in pod_of(job)["volumes"])
    assert isinstance(
        admission.admit(run(), "uid-1", [template_object("t")], Settings()), admission.Admitted
    )


def test_object_store_destinations_pass_through_untouched() -> None:
    t = template_object("t", artifacts={"destination": "s3://models/runs/{modelRunId}"})
    admitted = admission.admit(run(), "uid-1", [t], Settings())
    assert isinstance(admitted, admission.Admitted) and admitted.claim is None
    assert (
        env_of(admitted.job)["LBTRAIN_ARTIFACTS"] == f"s3://models/runs/{run().spec.model_run_id}"
    )


@pytest.mark.parametrize(
    ("spec", "writable"),
    [
        ({"artifacts": {"destination": "/artifacts/{modelRunId}"}}, False),
        # A read-only mount covers the path, but cannot take the weights.
        (
            {
                "artifacts": {"destination": "/models/{modelRunId}"},
                "volumes": [{"name": "m", "persistentVolumeClaim": {"claimName": "m"}}],
                "volumeMounts": [{"name": "m", "mountPath": "/models", "readOnly": True}],
            },
            False,
        ),
        ({"artifacts": {"destination": "file:///srv/{modelRunId}"}}, False),
        (
            {
                "artifacts": {"destination": "/models/{modelRunId}"},
                "volumes": [{"name": "m", "persistentVolumeClaim": {"claimName": "m"}}],
                "volumeMounts": [{"name": "m", "mountPath": "/models"}],
            },
            True,
        ),
        ({"artifacts": {"destination": "/artifacts/{modelRunId}", **CLAIM_T}}, True),
        ({"artifacts": {"destination": "/workspace/out/{modelRunId}"}}, True),
        ({"artifacts": {"destination": "gs://bucket/{modelRunId}"}}, True),
    ],
)
def test_a_local_destination_must_be_on_a_writable_mount(
    spec: dict[str, Any], writable: bool
) -> None:
    got = admission.admit(run(), "uid-1", [template_object("t", **spec)], Settings())
    if writable:
        assert isinstance(got, admission.Admitted)
        return
    assert isinstance(got, admission.Refused)
    assert got.reason == "ArtifactDestinationNotWritable"
    destination = spec["artifacts"]["destination"].replace("{modelRunId}", run().spec.model_run_id)
    assert repr(destination) in got.message
    assert "writable: /workspace, /tmp" in got.message
    assert "artifacts.volumeClaimTemplate" in got.message


def test_pods_get_shared_memory_ephemeral_storage_and_a_cheap_fs_group_change() -> None:
    t = template(workspace={"sizeLimit": "50Gi"}, shmSizeLimit="8Gi")
    pod = pod_of(build_job(run(), "uid-1", t, Settings(restricted_pods=True)))
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]
    for container in pod["initContainers"] + pod["containers"]:
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        assert container["resources"]["requests"]["ephemeral-storage"] == "50Gi"
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert pod["securityContext"]["fsGroup"] == 10001
    # The template's own choices win.
    own = template(
        workspace={"sizeLimit": "50Gi"},
        resources={"requests": {"ephemeral-storage": "80Gi"}},
        podSecurityContext={"fsGroup": 5, "fsGroupChangePolicy": "Always"},
    )
    pod = pod_of(build_job(run(), "uid-1", own, Settings()))
    assert pod["containers"][0]["resources"]["requests"]["ephemeral-storage"] == "80Gi"
    assert pod["securityContext"] == {"fsGroup": 5, "fsGroupChangePolicy": "Always"}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in pod["volumes"]


def test_a_template_that_mounts_its_own_shm_keeps_it() -> None:
    t = template(
        volumes=[{"name": "big-shm", "emptyDir": {"medium": "Memory"}}],
        volumeMounts=[{"name": "big-shm", "mountPath": "/dev/shm"}],
    )
    pod = pod_of(build_job(run(), "uid-1", t, Settings()))
    assert [v["name"] for v in pod["volumes"] if v.get("emptyDir", {}).get("medium")] == ["big-shm"]
    mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    assert mounts == [{"name": "big-shm", "mountPath": "/dev/shm"}]
