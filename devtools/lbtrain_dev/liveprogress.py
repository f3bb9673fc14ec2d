"""Live training progress in the testbed: a ModelRun with its Job and a pod of that Job, and a
token the API server binds to the pod for the progress audience, as the kubelet projects it
(docs/progress.md). The progress endpoint's tests, the chaos test and the progress bench use
them against a real API server; nothing here is a fake.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lbtrain import contract
from lbtrain.kube import JOBS, MODELRUNS, PODS, SERVICEACCOUNTS, ApiError, KubeClient
from lbtrain.resources.names import GROUP_VERSION
from lbtrain_dev.ids import fake_cuid


def owner(obj: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }


async def run_with_pod(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    """A ModelRun, its (suspended) Job and a pod of that Job, linked as the operator and the
    Job controller link them; answers the objects and a token the API server bound to the pod
    for the progress audience, as the kubelet projects it."""
    run = await kube.create(
        MODELRUNS,
        {
            "apiVersion": GROUP_VERSION,
            "kind": "ModelRun",
            "metadata": {"name": name},
            "spec": {"modelRunId": fake_cuid(name), "modelType": "image_single_classification"},
        },
        namespace,
    )
    pod_spec = {
        "restartPolicy": "Never",
        "containers": [{"name": "train", "image": "127.0.0.1:1/none:0"}],
    }
    # The Job controller makes the pod, as for a real run (a pod made by hand and claimed for
    # the Job is released by it: its labels do not match the Job's selector). With no node, it
    # stays Pending, which is all a token needs.
    job = await kube.create(
        JOBS,
        {
            "metadata": {
                "name": f"{name}-train",
                "ownerReferences": [owner(run, GROUP_VERSION, "ModelRun")],
            },
            "spec": {"parallelism": 1, "completions": 1, "template": {"spec": pod_spec}},
        },
        namespace,
    )
    pod = await job_pod(kube, namespace, job)
    token = await issue_token(kube, namespace, pod)
    return {"run": run, "job": job, "pod": pod, "token": token}


async def job_pod(kube: KubeClient, namespace: str, job: dict[str, Any]) -> dict[str, Any]:
    """The pod the Job controller made for `job`."""
    uid = job["metadata"]["uid"]
    for _ in range(300):
        listed = await kube.list(
            PODS, namespace, label_selector=f"batch.kubernetes.io/controller-uid={uid}"
        )
        if listed["items"]:
            return dict(listed["items"][0])
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the Job controller made no pod for {job['metadata']['name']}")


async def issue_token(
    kube: KubeClient,
    namespace: str,
    pod: dict[str, Any] | None,
    audience: str = contract.PROGRESS_AUDIENCE,
) -> str:
    spec: dict[str, Any] = {"audiences": [audience], "expirationSeconds": 600}
    if pod is not None:
        spec["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod["metadata"]["name"],
            "uid": pod["metadata"]["uid"],
        }
    path = SERVICEACCOUNTS.path(namespace, "default") + "/token"
    for _ in range(100):  # the service-account controller makes `default` soon after the namespace
        try:
            answer = await kube.request("POST", path, body={"spec": spec})
            return str(answer["status"]["token"])
        except ApiError:  # not there yet
            await asyncio.sleep(0.1)
    raise TimeoutError("the default service account never appeared")
