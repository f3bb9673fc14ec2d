"""The testbed behaves like a cluster: Jobs get pods, pods finish, Jobs complete or fail,
owners cascade. These are the foundations every operator test stands on."""

from __future__ import annotations

from typing import Any

import pytest

from lbtrain.kube import JOBS, NAMESPACES, PODS, SECRETS, KubeClient, NotFound, load_config
from lbtrain.kube.errors import ApiUnreachable, Invalid
from lbtrain_dev.testbed import ControlPlane, KubectlError, StartError
from lbtrain_dev.testbed.fake_kubelet import FakeKubelet

pytestmark = pytest.mark.testbed


def job_body(name: str, backoff_limit: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}],
                },
            },
        },
    }


def condition(obj: dict[str, Any], type_: str) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return str(cond["status"])
    return None


async def test_api_server_answers_with_pinned_version(kube: KubeClient) -> None:
    version = await kube.request("GET", "/version")
    assert version["gitVersion"] == "v1.35.4"
    assert (version["major"], version["minor"]) == ("1", "35")


async def test_namespace_is_created_and_usable(kube: KubeClient, namespace: str) -> None:
    ns = await kube.get(NAMESPACES, namespace)
    assert ns["status"]["phase"] == "Active"
    created = await kube.create(
        SECRETS, {"metadata": {"name": "s"}, "stringData": {"k": "v"}}, namespace
    )
    assert created["metadata"]["namespace"] == namespace


async def test_job_gets_pod_and_completes(
    kube: KubeClient, namespace: str, kubelet: FakeKubelet
) -> None:
    await kube.create(JOBS, job_body("ok"), namespace)
    pods = await kubelet.wait_for_pods("app=ok", 1)
    assert pods[0]["metadata"]["ownerReferences"][0]["kind"] == "Job"
    await kubelet.schedule(pods[0])
    await kubelet.run_stage(pods[0], "main")
    await kubelet.succeed(pods[0])
    job = await kube.wait_for(JOBS, "ok", namespace, lambda j: condition(j, "Complete") == "True")
    assert job["status"]["succeeded"] == 1


async def test_failed_pod_with_backoff_zero_fails_job(
    kube: KubeClient, namespace: str, kubelet: FakeKubelet
) -> None:
    await kube.create(JOBS, job_body("bad", backoff_limit=0), namespace)
    pods = await kubelet.wait_for_pods("app=bad", 1)
    await kubelet.schedule(pods[0])
    await kubelet.fail(pods[0], exit_code=3, message="boom")
    job = await kube.wait_for(JOBS, "bad", namespace, lambda j: condition(j, "Failed") == "True")
    reasons = {c["type"]: c.get("reason") for c in job["status"]["conditions"]}
    assert reasons["Failed"] == "BackoffLimitExceeded"


async def test_deleting_owner_cascades_to_pods(
    kube: KubeClient, namespace: str, kubelet: FakeKubelet
) -> None:
    job = await kube.create(JOBS, job_body("owner"), namespace)
    pods = await kubelet.wait_for_pods("app=owner", 1)
    # An owned object of another kind: the garbage collector must remove it with its owner.
    await kube.create(
        SECRETS,
        {
            "metadata": {
                "name": "owned",
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": "owner",
                        "uid": job["metadata"]["uid"],
                    }
                ],
            }
        },
        namespace,
    )
    await kube.delete(JOBS, "owner", namespace, propagation="Background")

    async def gone(res: Any, name: str) -> None:
        import asyncio

        for _ in range(300):
            try:
                await kube.get(res, name, namespace)
            except NotFound:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{res.kind} {name} still exists after its owner was deleted")

    await gone(PODS, pods[0]["metadata"]["name"])
    await gone(SECRETS, "owned")


async def test_invalid_object_is_refused_with_message(kube: KubeClient, namespace: str) -> None:
    body = job_body("bad-restart")
    body["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(Invalid, match="restartPolicy"):
        await kube.create(JOBS, body, namespace)


async def test_create_without_decoding_still_creates_and_still_reports_errors(
    kube: KubeClient, namespace: str
) -> None:
    assert await kube.create(JOBS, job_body("quiet"), namespace, decode=False) == {}
    assert (await kube.get(JOBS, "quiet", namespace))["metadata"]["name"] == "quiet"
    body = job_body("bad-quiet")
    body["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(Invalid, match="restartPolicy"):
        await kube.create(JOBS, body, namespace, decode=False)


def test_install_crds_serves_the_kinds_and_refuses_a_broken_crd_by_name(
    control_plane: ControlPlane, tmp_path
) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "widget.yaml").write_text(WIDGET_CRD)
    control_plane.install_crds(good)
    # Established: objects of the kind are accepted at once.
    widget = (
        "apiVersion: testbed.example/v1\nkind: Widget\nmetadata: {name: w1, namespace: default}\n"
    )
    created = control_plane.kubectl("apply", "-f", "-", input=widget)
    assert created.returncode == 0, created.stderr

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "gadget.yaml").write_text(
        WIDGET_CRD.replace("widgets", "gadgets")
        .replace("Widget", "Gadget")
        .replace("widget", "gadget")
        .replace("scope: Namespaced", "scope: Sideways")
    )
    with pytest.raises(KubectlError) as info:
        control_plane.install_crds(broken)
    assert "kubectl apply" in str(info.value)
    assert "scope" in str(info.value)  # the API server's own words reach the caller
    missing = control_plane.kubectl("get", "crd", "gadgets.testbed.example")
    assert missing.returncode != 0  # nothing half-created


WIDGET_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.testbed.example}
spec:
  group: testbed.example
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object}}
"""


async def test_unreachable_api_server_is_a_clear_error(control_plane: ControlPlane) -> None:
    config = load_config(str(control_plane.kubeconfig))
    from dataclasses import replace

    from lbtrain_dev.testbed.controlplane import free_port

    async with KubeClient(replace(config, server=f"https://127.0.0.1:{free_port()}")) as client:
        with pytest.raises(ApiUnreachable):
            await client.get(NAMESPACES, "default")


def test_failed_start_names_component_and_shows_log(testbed_bin, tmp_path) -> None:
    # etcd refuses a data dir that is a regular file: the error must say which component and why.
    plane = ControlPlane(testbed_bin, tmp_path)
    (tmp_path / "etcd").write_text("not a directory")
    with pytest.raises(StartError) as info:
        plane.start(timeout=20)
    assert info.value.component == "etcd"
    assert "last lines of" in str(info.value)
    assert plane.running() == {}
