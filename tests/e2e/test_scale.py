"""Several training processes in one pod, on a real node: the chart's operator runs `train` under
torchrun, two CPU processes (gloo) train one model, and Labelbox sees what it sees for one.

Two templates of the chart serve the same task on the same rows, one with one process and one
with `numProcPerNode: 2`. Both runs must reach the same held-out accuracy within one held-out
row: the synthetic text rows are learned to (near) perfect held-out accuracy by the small model
in a few epochs with one process or two (measured: 1.0 and 1.0), while DDP over two ranks takes
half as many optimizer steps, each on twice the examples, so the two runs need not agree row for
row. A larger gap would mean the ranks do not train one model (each a half, say).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from lbtrain.kube import JOBS, MODELRUNS, PODS, KubeClient, NotFound, load_config
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.images import ImageSet
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed import nodeconfig as nc
from lbtrain_dev.testbed.s3server import S3Server
from lbtrain_trainer.hyperparams import RESULTS_KEY
from lbtrain_trainer.synthetic import make_dataset

from ..helm.helpers import CHART, Helm, set_args
from .helpers import BUCKET, bucket_env, bucket_secret, imported_image_values, timeline

pytestmark = [pytest.mark.testbed, pytest.mark.trainer, pytest.mark.slow]

NS = "lbtrain"
API_KEY = "lb-api-key-scale"
TASK = "text_single_classification"
FULL = ["EXPORTING_DATA", "PREPARING_DATA", "TRAINING_MODEL", "COMPLETE"]
ONE, TWO = "Text - 1 process", "Text - 2 processes"
GANG = "Text - 2 pods of 2 processes"


def template(model_type: str, **spec: Any) -> dict[str, Any]:
    """A chart template of the task on CPU, small and quick, plus `spec` (any CRD field)."""
    return {
        "modelType": model_type,
        "gpus": 0,
        "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
        "hyperparameters": {"epochs": 6, "model_size": "small", "num_workers": 0},
        "spec": {"task": TASK, **spec},
    }


@pytest.fixture(scope="module")
def labelbox() -> Iterator[FakeLabelbox]:
    with FakeLabelbox.in_thread(api_key=API_KEY, host=nc.node_ip()) as fake:
        yield fake


@pytest.fixture(scope="module")
def installed(
    real_node: ControlPlane,
    images: ImageSet,
    labelbox: FakeLabelbox,
    s3: S3Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ControlPlane]:
    """The chart with three templates of one task: one and two processes in one pod, weights in
    the pod's workspace (one pod: no storage to share), and two pods of two processes each,
    whose ranks share a bucket of a real S3 server (versitygw) for checkpoint and weights."""
    real_node.kubectl("create", "namespace", NS, check=True)
    real_node.kubectl("apply", "-f", "-", input=json.dumps(bucket_secret(s3, NS)), check=True)
    gang = template(
        GANG,
        numNodes=2,
        numProcPerNode=2,
        artifacts={"destination": f"s3://{BUCKET}/scale/{{modelRunId}}"},
        env=bucket_env(s3),
        backoffLimit=1,
    )
    helm = Helm(real_node.bin_dir / "helm", tmp_path_factory.mktemp("helm"), real_node.kubeconfig)
    values = {
        **imported_image_values(images),
        "labelbox.endpoint": labelbox.endpoint,
        "labelbox.restEndpoint": labelbox.rest_endpoint,
        "labelbox.apiKey": API_KEY,
        "artifacts.perRunClaim.enabled": False,
        "trainingTemplates.templates.text-one": template(ONE),
        "trainingTemplates.templates.text-two": template(TWO, numProcPerNode=2),
        "trainingTemplates.templates.text-gang": gang,
        "operator.extraArgs": ["--resync-interval=2", "--report-backoff-max=1"],
    }
    result = helm(
        "install", "lbtrain", str(CHART), f"--namespace={NS}", "--wait", "--timeout=5m",
        *set_args(values), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    yield real_node
    real_node.kubectl("delete", "mr", "--all", "-n", NS, "--wait=false")
    helm("uninstall", "lbtrain", f"--namespace={NS}", "--wait", check=False)


@pytest.fixture
async def kube(installed: ControlPlane) -> AsyncIterator[KubeClient]:
    async with KubeClient(load_config(str(installed.kubeconfig))) as client:
        yield client


async def finished(kube: KubeClient, name: str, timeout: float) -> dict[str, Any]:
    def done(mr: dict[str, Any]) -> bool:
        st = mr.get("status") or {}
        acked = (st.get("labelbox") or {}).get("acknowledged")
        return st.get("phase") in ("Succeeded", "Failed") and acked in ("COMPLETE", "FAILED")

    return dict((await kube.wait_for(MODELRUNS, name, NS, done, timeout=timeout))["status"])


@pytest.mark.timeout(900)
async def test_two_processes_in_one_pod_train_one_model_as_one_process_does(
    installed: ControlPlane, kube: KubeClient, labelbox: FakeLabelbox
) -> None:
    runs = {"one": ONE, "two": TWO}
    ids = {name: fake_cuid(f"scale-{name}") for name in runs}
    for name, model_type in runs.items():
        # The same rows (one seed) under each run: an export row names the run it belongs to.
        data = make_dataset(TASK, 60, media_url_for=labelbox.add_media, model_run_id=ids[name])
        labelbox.add_model_run(ids[name], rows=data.rows, name=f"e2e scale {name}")
        body = {
            "metadata": {"name": name},
            "spec": {"modelRunId": ids[name], "modelType": model_type, "modelId": fake_cuid("m")},
        }
        await kube.create(MODELRUNS, body, NS)
    try:
        done = {name: await finished(kube, name, 700) for name in runs}
    finally:
        print(installed.kubectl("get", "mr,jobs,pods", "-n", NS, "-o", "wide").stdout)
        print(installed.kubectl("logs", "-n", NS, "job/two-train", "-c", "train").stdout[-6000:])
    for name, status in done.items():
        assert status["phase"] == "Succeeded", (name, status)
        # One ordered timeline (TRAINING_MODEL again for each newer progress, from rank 0).
        assert timeline(labelbox.status_updates(ids[name])) == FULL, name
        assert len(labelbox.imports(ids[name])) == 1, name  # predictions uploaded once

    # The two-process run was one pod whose train container ran torchrun with two ranks.
    train = (await kube.get(JOBS, "two-train", NS))["spec"]["template"]["spec"]["containers"][0]
    assert train["command"][0] == "torchrun"
    env = {e["name"]: e.get("value") for e in train["env"]}
    assert (env["PET_NPROC_PER_NODE"], env["PET_NNODES"]) == ("2", "1")
    pods = await kube.list(PODS, NS, label_selector="lbtrain.io/model-run=two")
    assert len(pods["items"]) == 1
    one_train = (await kube.get(JOBS, "one-train", NS))["spec"]["template"]["spec"]
    assert one_train["containers"][0]["command"] == ["lbtrain", "trainer", "train"]

    results = {name: labelbox.config(ids[name])[RESULTS_KEY] for name in runs}
    assert results["one"]["throughput"]["world_size"] == 1
    assert results["two"]["throughput"]["world_size"] == 2
    headline = results["one"]["headline_metric"]
    assert results["two"]["headline_metric"] == headline
    held_out = min(results[n]["splits"][results[n]["evaluated_on"]] for n in runs)
    assert held_out > 0
    one, two = results["one"][headline], results["two"][headline]
    assert abs(one - two) <= 1 / held_out + 1e-9, (headline, one, two, held_out)
    assert min(one, two) >= 0.8, (headline, one, two)  # both learned the task


# --- two pods of two processes ----------------------------------------------------------------


def seed_run(labelbox: FakeLabelbox, name: str, rows: int = 60) -> str:
    """A Labelbox model run with the module's rows (one seed), named for the ModelRun."""
    run_id = fake_cuid(f"scale-{name}")
    data = make_dataset(TASK, rows, media_url_for=labelbox.add_media, model_run_id=run_id)
    labelbox.add_model_run(run_id, rows=data.rows, name=f"e2e scale {name}")
    return run_id


async def create_run(
    kube: KubeClient, name: str, run_id: str, model_type: str, **hyperparameters: Any
) -> None:
    spec: dict[str, Any] = {"modelRunId": run_id, "modelType": model_type}
    spec["modelId"] = fake_cuid("m")
    if hyperparameters:
        spec["hyperparameters"] = hyperparameters
    await kube.create(MODELRUNS, {"metadata": {"name": name}, "spec": spec}, NS)


def exports(labelbox: FakeLabelbox, run_id: str) -> int:
    """How many Labelbox exports of the model run were started (pods and attempts together)."""
    return sum(
        1
        for r in labelbox.requests
        if r.field == "exportDataRowsInModelRun"
        and (((r.variables or {}).get("input") or {}).get("filters") or {}).get("modelRunId")
        == run_id
    )


def attempts_seen(labelbox: FakeLabelbox, run_id: str) -> list[int]:
    return [int((u.metadata or {}).get("attempt", 0)) for u in labelbox.status_updates(run_id)]


def diagnose(plane: ControlPlane, *jobs: str) -> None:
    print(plane.kubectl("get", "mr,jobs,pods,svc", "-n", NS, "-o", "wide").stdout)
    print(plane.kubectl("describe", "mr", "-n", NS).stdout[-6000:])
    print(plane.kubectl("logs", "-n", NS, "deploy/lbtrain-operator", "--tail=60").stdout)
    for job in jobs:
        print(plane.kubectl("logs", "-n", NS, f"job/{job}", "-c", "train").stdout[-4000:])


@pytest.mark.timeout(1200)
async def test_two_pods_of_two_processes_train_one_model_as_one_process_does(
    installed: ControlPlane, kube: KubeClient, labelbox: FakeLabelbox
) -> None:
    """Four ranks on two pods (static rendezvous through the headless Service and the cluster
    DNS, checkpoint and weights in the bucket) reach the held-out accuracy of one process on
    the same rows within one held-out row, as the one-pod case above does and for the same
    reason: the small model learns these rows to (near) perfect held-out accuracy either way,
    while four ranks take a quarter of the optimizer steps, each on four times the rows."""
    ids = {name: seed_run(labelbox, name) for name in ("solo", "gang")}
    await create_run(kube, "solo", ids["solo"], ONE, epochs=10)
    await create_run(kube, "gang", ids["gang"], GANG, epochs=10)
    try:
        done = {name: await finished(kube, name, 1000) for name in ids}
    finally:
        diagnose(installed, "gang-train")
    for name, status in done.items():
        assert status["phase"] == "Succeeded", (name, status)
        assert timeline(labelbox.status_updates(ids[name])) == FULL, name  # one ordered timeline
        assert len(labelbox.imports(ids[name])) == 1, name  # predictions uploaded once
    gang = done["gang"]
    assert (gang["attempt"], gang["failedAttempts"], gang["jobName"]) == (1, 0, "gang-train")
    assert gang["workersUp"] == "2/2"
    assert [(w["index"], w["state"]) for w in gang["workers"]] == [
        (0, "Succeeded"),
        (1, "Succeeded"),
    ]
    metas = [u.metadata or {} for u in labelbox.status_updates(ids["gang"])]
    assert {m["workers"] for m in metas} <= {"0/2", "1/2", "2/2"}
    assert metas[-1]["attempt"] == 1
    assert exports(labelbox, ids["gang"]) == 1  # two pods, one export: pod 1 unpacked pod 0's
    job = await kube.get(JOBS, "gang-train", NS)
    assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("Indexed", 2)

    results = {name: labelbox.config(ids[name])[RESULTS_KEY] for name in ids}
    assert results["solo"]["throughput"]["world_size"] == 1
    assert results["gang"]["throughput"]["world_size"] == 4
    headline = results["solo"]["headline_metric"]
    assert results["gang"]["headline_metric"] == headline
    held_out = min(results[n]["splits"][results[n]["evaluated_on"]] for n in ids)
    assert held_out > 0
    solo, four = results["solo"][headline], results["gang"][headline]
    assert abs(solo - four) <= 1 / held_out + 1e-9, (headline, solo, four, held_out)
    assert min(solo, four) >= 0.8, (headline, solo, four)


async def job_pods(kube: KubeClient, job: str) -> list[dict[str, Any]]:
    listed = await kube.list(PODS, NS, label_selector=f"batch.kubernetes.io/job-name={job}")
    return list(listed["items"])


@pytest.mark.timeout(1200)
async def test_a_killed_rank_ends_the_attempt_and_the_next_one_resumes_to_complete(
    installed: ControlPlane, kube: KubeClient, labelbox: FakeLabelbox, s3: S3Server
) -> None:
    """Rank 1's pod is killed (deleted with no grace: SIGKILL) after a checkpoint: the Job
    controller fails the attempt as a whole, the operator starts attempt 2 (`<job>-a2`), which
    resumes from the bucket's checkpoint and completes; Labelbox sees one ordered timeline and
    the attempt in the metadata never goes back."""
    run_id = seed_run(labelbox, "resume", rows=120)
    await create_run(kube, "resume", run_id, GANG, epochs=40)
    checkpoint = s3.bucket_path(BUCKET) / "scale" / run_id / "checkpoint" / "last.pt"
    try:
        deadline = time.monotonic() + 900
        while not checkpoint.exists():
            assert time.monotonic() < deadline, "no checkpoint in the bucket"
            await asyncio.sleep(0.5)
        victim = next(
            p["metadata"]["name"]
            for p in await job_pods(kube, "resume-train")
            if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "1"
        )
        killed_at = time.monotonic()
        installed.kubectl(
            "delete", "pod", victim, "-n", NS, "--grace-period=0", "--force", check=True
        )
        # The attempt ends as a whole: no pod of it runs any more.
        while any(
            (p.get("status") or {}).get("phase") in ("Pending", "Running")
            for p in await job_pods(kube, "resume-train")
        ):
            assert time.monotonic() - killed_at < 60, "the other rank was left running"
            await asyncio.sleep(0.5)
        ended_s = time.monotonic() - killed_at
        print(f"attempt 1 ended {ended_s:.1f}s after the kill")
        second = await kube.wait_for(JOBS, "resume-train-a2", NS, lambda j: bool(j), timeout=60)
        assert second["metadata"]["name"] == "resume-train-a2"
        done = await finished(kube, "resume", 900)
    finally:
        diagnose(installed, "resume-train", "resume-train-a2")
    assert done["phase"] == "Succeeded", done
    assert (done["attempt"], done["failedAttempts"]) == (2, 1)
    assert done["jobName"] == "resume-train-a2"
    summary = done["summary"]  # rank 0's (pod index 0's train container)
    assert summary["resumed_from_epoch"] > 0, summary  # attempt 2 began past epoch 0
    assert summary["epochs_completed"] == 40, summary
    assert timeline(labelbox.status_updates(run_id)) == FULL
    assert len(labelbox.imports(run_id)) == 1
    # Two pods and two attempts, one export: attempt 2 reused what attempt 1's pod 0 prepared.
    assert exports(labelbox, run_id) == 1
    seen = attempts_seen(labelbox, run_id)
    assert seen == sorted(seen) and seen[-1] == 2, seen  # no flapping back to attempt 1
    # The first attempt's Job is deleted (its pods with it) once the second one is recorded.
    assert not await job_pods(kube, "resume-train")
    with pytest.raises(NotFound):
        await kube.get(JOBS, "resume-train", NS)
