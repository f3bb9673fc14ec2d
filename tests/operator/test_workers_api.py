"""A run of several pods as a real API server stores and shows it: the attempt and per-pod rows
survive the CRD's schema (a field missing there would be pruned and silently forgotten), `kubectl
get mr` shows `Workers 2/2`, `kubectl describe mr` shows every row, and the next attempt's Job and
Service (renamed from the first attempt's) are accepted as built.
"""

from __future__ import annotations

from typing import Any

import pytest

from lbtrain.kube import JOBS, MODELRUNS, SERVICES, KubeClient
from lbtrain.resources.models import ModelRun, Phase
from lbtrain.resources.status import ModelRunStatus, WorkerRow
from lbtrain_dev.ids import fake_cuid
from lbtrain_operator import admission, attempts, scale
from lbtrain_operator.settings import Settings

from .builders import IMAGE, template_object
from .test_scale_api import dry_run

pytestmark = [pytest.mark.testbed, pytest.mark.usefixtures("crds")]


async def test_attempt_and_worker_rows_are_stored_and_shown(
    kube: KubeClient, namespace: str, kubectl: Any
) -> None:
    body = {
        "metadata": {"name": "gang"},
        "spec": {"modelRunId": fake_cuid("gang"), "modelType": "ner", "modelId": fake_cuid("m")},
    }
    await kube.create(MODELRUNS, body, namespace)
    rows = [
        WorkerRow(index=0, pod="gang-train-a2-0-x", node="node-a", stage="train", state="Running"),
        WorkerRow(
            index=1,
            pod="gang-train-a2-1-y",
            node="node-b",
            stage="prepare",
            state="Pending",
            reason="PodInitializing",
            restarts=1,
        ),
    ]
    status = ModelRunStatus(
        phase=Phase.PREPARING,
        reason="StageRunning",
        job_name="gang-train-a2",
        attempt=2,
        failed_attempts=1,
        workers=rows,
        workers_up="2/2",
    )
    await kube.patch(MODELRUNS, "gang", {"status": status.wire()}, namespace, subresource="status")
    stored = ModelRunStatus.model_validate((await kube.get(MODELRUNS, "gang", namespace))["status"])
    assert (stored.attempt, stored.failed_attempts, stored.workers_up) == (2, 1, "2/2")
    assert stored.workers == rows  # nothing pruned

    table = kubectl("get", "mr", "gang", "-n", namespace, "-o", "wide").stdout.splitlines()
    header, line = table[0], table[1]

    def cell(column: str) -> str:  # columns are aligned under their header
        return str(line[header.index(column) :].split()[0])

    assert cell("WORKERS") == "2/2"
    assert cell("ATTEMPT") == "2"
    described = kubectl("describe", "mr", "gang", "-n", namespace).stdout
    for row in rows:
        assert row.pod in described and str(row.node) in described
    assert "PodInitializing" in described


async def test_the_next_attempt_s_job_and_service_are_accepted(
    kube: KubeClient, namespace: str
) -> None:
    template = template_object(
        "ddp",
        "ner",
        gpus=0,
        numProcPerNode=2,
        numNodes=2,
        artifacts={"destination": "s3://models/runs/{modelRunId}"},
        image=IMAGE,
    )
    run = ModelRun.model_validate(
        {
            "metadata": {"name": "gang", "namespace": namespace, "uid": "u"},
            "spec": {"modelRunId": fake_cuid("g"), "modelType": "ner", "modelId": fake_cuid("m")},
        }
    )
    got = admission.admit(run, "u", [template], Settings())
    assert isinstance(got, admission.Admitted)
    name = attempts.job_name(got.job["metadata"]["name"], 2)
    job = await dry_run(kube, JOBS, attempts.renamed(got.job, name), namespace)
    assert job["metadata"]["name"] == "gang-train-a2"
    assert job["spec"]["template"]["spec"]["subdomain"] == "rdzv-gang-train-a2"
    service = await dry_run(kube, SERVICES, scale.build_service(job, "gang", "u"), namespace)
    assert service["spec"]["selector"] == {scale.JOB_NAME_LABEL: "gang-train-a2"}
