"""The scale fields and the Job shapes they build, as a real API server takes them.

The pure tests (`test_jobspec.py`, `test_admission.py`) say what is built; these say that the
API server stores the fields as the operator reads them, refuses what the schema refuses, and
accepts the Indexed Job and its headless Service as built (server-side dry run: validated and
admitted, nothing stored), so a multi-pod run is never refused by the cluster at creation.
"""

from __future__ import annotations

from typing import Any

import pytest

from lbtrain.kube import JOBS, MODELRUNS, SERVICES, TRAININGTEMPLATES, Invalid, KubeClient, NotFound
from lbtrain.kube.resources import Resource
from lbtrain.resources.models import ModelRun
from lbtrain_dev.ids import fake_cuid
from lbtrain_operator import admission
from lbtrain_operator.settings import Settings

from .builders import IMAGE
from .test_operator_lifecycle import until_acknowledged

pytestmark = [pytest.mark.testbed, pytest.mark.usefixtures("crds")]


async def dry_run(kube: KubeClient, res: Resource, body: dict[str, Any], ns: str) -> Any:
    body = {"apiVersion": res.api_version, "kind": res.kind, **body}
    return await kube.request("POST", res.path(ns), body=body, params={"dryRun": "All"})


async def test_a_multi_pod_run_s_job_and_service_are_accepted(
    kube: KubeClient, namespace: str
) -> None:
    template = await kube.create(
        TRAININGTEMPLATES,
        {
            "metadata": {"name": "ddp"},
            "spec": {
                "modelType": "ner",
                "image": IMAGE,
                "gpus": 0,
                "numProcPerNode": 2,
                "numNodes": 4,
                "artifacts": {"destination": "s3://models/runs/{modelRunId}"},
            },
        },
        namespace,
    )
    assert (template["spec"]["numProcPerNode"], template["spec"]["numNodes"]) == (2, 4)
    stored = await kube.create(
        MODELRUNS,
        {
            "metadata": {"name": "0d15ea5e-run"},  # a run name may start with a digit
            "spec": {
                "modelRunId": fake_cuid("scale"),
                "modelType": "ner",
                "modelId": fake_cuid("m"),
                "numNodes": 3,
            },
        },
        namespace,
    )
    run = ModelRun.model_validate(stored)
    got = admission.admit(run, stored["metadata"]["uid"], [template], Settings())
    assert isinstance(got, admission.Admitted) and got.service is not None
    job = await dry_run(kube, JOBS, got.job, namespace)
    assert job["spec"]["completionMode"] == "Indexed"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (3, 3)  # the run's count
    assert job["spec"]["template"]["spec"]["subdomain"] == "rdzv-0d15ea5e-run-train"
    service = await dry_run(kube, SERVICES, got.service, namespace)
    assert service["metadata"]["name"] == "rdzv-0d15ea5e-run-train"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True


async def test_a_single_pod_run_with_processes_is_accepted(
    kube: KubeClient, namespace: str
) -> None:
    template = await kube.create(
        TRAININGTEMPLATES,
        {"metadata": {"name": "gpus"}, "spec": {"modelType": "ner", "image": IMAGE, "gpus": 4}},
        namespace,
    )
    assert template["spec"]["numNodes"] == 1  # the schema's default
    assert "numProcPerNode" not in template["spec"]  # unset: one per GPU
    run = ModelRun.model_validate(
        {
            "metadata": {"name": "r1", "namespace": namespace},
            "spec": {"modelRunId": fake_cuid("one"), "modelType": "ner"},
        }
    )
    got = admission.admit(run, "uid-1", [template], Settings())
    assert isinstance(got, admission.Admitted) and got.service is None
    job = await dry_run(kube, JOBS, got.job, namespace)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][0] == "torchrun"


@pytest.mark.parametrize(
    "spec", [{"numProcPerNode": 0}, {"numNodes": 0}, {"numNodes": 65}, {"numProcPerNode": "2"}]
)
async def test_the_schema_refuses_counts_out_of_range(
    kube: KubeClient, namespace: str, spec: dict[str, Any]
) -> None:
    with pytest.raises(Invalid):
        await kube.create(
            TRAININGTEMPLATES,
            {"metadata": {"name": "bad"}, "spec": {"modelType": "ner", "image": IMAGE, **spec}},
            namespace,
        )
    with pytest.raises(Invalid):
        await kube.create(
            MODELRUNS,
            {
                "metadata": {"name": "bad"},
                "spec": {"modelRunId": fake_cuid("bad"), "modelType": "ner", "numNodes": 0},
            },
            namespace,
        )


@pytest.mark.usefixtures("lbsecret")
async def test_the_operator_creates_a_multi_pod_run_s_service_and_refuses_unshared_storage(
    kube: KubeClient, namespace: str, start_operator: Any, make_template: Any, make_run: Any
) -> None:
    """Through the real operator: the Service a multi-pod run's ranks find rank 0 through is
    created with its Indexed Job, owned by the run; a multi-pod run on the pod's own workspace
    fails before any Job, and says which destinations work."""
    await make_template(
        "ner", gpus=0, numNodes=2, artifacts={"destination": "s3://models/{modelRunId}"}
    )
    start_operator()
    body = await make_run("ddp", model_type="ner")
    job = await kube.wait_for(JOBS, "ddp-train", namespace, lambda _: True, timeout=30)
    assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("Indexed", 2)
    service = await kube.get(SERVICES, "rdzv-ddp-train", namespace)
    [owner] = service["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "ModelRun",
        "ddp",
        body["metadata"]["uid"],
    )
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": "ddp-train"}
    assert service["spec"]["clusterIP"] == "None"

    await make_template("image_single_classification", gpus=0)  # the pod's own workspace
    await make_run("local", numNodes=2)
    st = await until_acknowledged(kube, namespace, "local", "FAILED")
    assert (st["phase"], st["reason"]) == ("Failed", "ArtifactDestinationNotShared")
    assert "ReadWriteMany" in st["message"] and "object store" in st["message"]
    with pytest.raises(NotFound):
        await kube.get(JOBS, "local-train", namespace)
