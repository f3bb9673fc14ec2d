"""Runs queued through a real Kueue on a real node: one trains at a time, the others say why.

Kueue v0.17.0 (built here, installed with its own chart: lbtrain_dev.testbed.kueue) admits
batch/v1 Jobs from a ClusterQueue whose memory quota holds exactly one run. The chart's operator
(kueue.enabled) creates each run's Job labelled with the template's queueName and suspended;
while Kueue holds it the run's reason is Queued with Kueue's own message and its place in the
queue, and the fake Labelbox receives that in the run's metadata. Each run starts in turn and
all three complete. A run deleted while queued takes its Workload with it.

Real node tests: run them under `flock /tmp/lbtrain-realnode.lock`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from lbtrain.kube import JOBS, MODELRUNS, KubeClient, NotFound, load_config
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.images import ImageSet
from lbtrain_dev.testbed import ControlPlane, kueue
from lbtrain_operator import queueing
from lbtrain_trainer.synthetic import make_dataset

from .helpers import install_lbtrain

pytestmark = [pytest.mark.testbed, pytest.mark.trainer, pytest.mark.slow]

NS = "lbtrain"
QUEUE = "user-queue"
TASK = "text_single_classification"
MODEL_TYPE = "Text - queued"
FULL = ["EXPORTING_DATA", "PREPARING_DATA", "TRAINING_MODEL", "COMPLETE"]
FLAVOR, CQ = "lbtrain-e2e-flavor", "lbtrain-e2e-cq"
# Every pod of a run asks for 1Gi (its stages run one at a time): 1.5Gi holds one run, not two.
QUOTA = [
    {"name": "cpu", "nominalQuota": "2"},
    {"name": "memory", "nominalQuota": "1536Mi"},
    {"name": "ephemeral-storage", "nominalQuota": "500Gi"},  # the workspace's request
]
# Kueue's scheduler's words for a Workload that waits for quota another one holds.
KUEUE_WAITING = "insufficient unused quota for memory in flavor " + FLAVOR


@pytest.fixture(scope="module")
def kueue_installed(
    real_node: ControlPlane, request: pytest.FixtureRequest
) -> Iterator[ControlPlane]:
    """Kueue on the node, with a ClusterQueue of room for one run and the LocalQueue `QUEUE` in
    the release namespace; uninstalled after (a leftover fail-closed webhook would refuse every
    later Job)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        build = kueue.ensure_kueue_build()
    kueue.install(real_node, build)
    try:
        yield real_node
    finally:
        kueue.uninstall(real_node)


@pytest.fixture(scope="module")
def installed(
    kueue_installed: ControlPlane,
    images: ImageSet,
    labelbox: FakeLabelbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ControlPlane]:
    plane = kueue_installed
    template = {
        "modelType": MODEL_TYPE,
        "gpus": 0,
        "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
        "hyperparameters": {"epochs": 3, "model_size": "small", "num_workers": 0},
        "spec": {"task": TASK, "queueName": QUEUE},
    }
    values = {
        "kueue.enabled": True,
        "artifacts.perRunClaim.enabled": False,
        "trainingTemplates.templates.text-queued": template,
        "operator.extraArgs": ["--resync-interval=2", "--report-backoff-max=1"],
    }
    helm = install_lbtrain(plane, images, labelbox, tmp_path_factory.mktemp("helm"), NS, values)
    group = f"{kueue.GROUP}/v1beta2"
    queue_objects = [
        {"apiVersion": group, "kind": "ResourceFlavor", "metadata": {"name": FLAVOR}},
        {
            "apiVersion": group,
            "kind": "ClusterQueue",
            "metadata": {"name": CQ},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}},
                "resourceGroups": [
                    {
                        "coveredResources": [q["name"] for q in QUOTA],
                        "flavors": [{"name": FLAVOR, "resources": QUOTA}],
                    }
                ],
            },
        },
        {
            "apiVersion": group,
            "kind": "LocalQueue",
            "metadata": {"name": QUEUE, "namespace": NS},
            "spec": {"clusterQueue": CQ},
        },
    ]
    plane.kubectl(
        "apply", "-f", "-", check=True,
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": queue_objects}),
    )  # fmt: skip
    plane.kubectl(
        "wait", f"localqueues.{kueue.GROUP}/{QUEUE}", "-n", NS, "--for=condition=Active",
        "--timeout=120s", check=True, timeout=150,
    )  # fmt: skip
    yield plane
    plane.kubectl("delete", "mr", "--all", "-n", NS, "--timeout=120s", timeout=150)
    helm("uninstall", "lbtrain", f"--namespace={NS}", "--wait", check=False)


@pytest.fixture
async def kube(installed: ControlPlane) -> AsyncIterator[KubeClient]:
    async with KubeClient(load_config(str(installed.kubeconfig))) as client:
        yield client


async def workload_of(kube: KubeClient, job_uid: str) -> dict[str, Any] | None:
    selector = f"{queueing.JOB_UID_LABEL}={job_uid}"
    items = (await kube.list(queueing.WORKLOADS, NS, label_selector=selector))["items"]
    return items[0] if items else None


async def new_run(kube: KubeClient, labelbox: FakeLabelbox, name: str) -> str:
    run_id = fake_cuid(f"queue-{name}")
    data = make_dataset(TASK, 40, media_url_for=labelbox.add_media, model_run_id=run_id)
    labelbox.add_model_run(run_id, rows=data.rows, name=f"e2e queue {name}")
    body = {
        "metadata": {"name": name},
        "spec": {"modelRunId": run_id, "modelType": MODEL_TYPE, "modelId": fake_cuid("m")},
    }
    await kube.create(MODELRUNS, body, NS)
    return run_id


def deduped(statuses: list[str]) -> list[str]:
    return [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]


@pytest.mark.timeout(1200)
async def test_three_queued_runs_train_one_at_a_time_and_the_waiting_ones_say_why(
    installed: ControlPlane, kube: KubeClient, labelbox: FakeLabelbox
) -> None:
    names = ["a", "b", "c"]
    own = {f"{n}-train" for n in names}
    ids = {name: await new_run(kube, labelbox, name) for name in names}

    # A fourth run, queued behind the three, deleted while it waits: its Workload goes too.
    # It is created only once Kueue has admitted one of the three: the operator makes the four
    # Jobs concurrently, and a fourth made while the quota is still free could be the one admitted.
    deadline = time.monotonic() + 120
    while not any(
        j["metadata"]["name"] in own and j["spec"].get("suspend") is False
        for j in (await kube.list(JOBS, NS))["items"]
    ):
        assert time.monotonic() < deadline, "Kueue admitted none of the three runs"
        await asyncio.sleep(0.5)
    await new_run(kube, labelbox, "d")
    job_d = await kube.wait_for(JOBS, "d-train", NS, lambda j: True, timeout=60, interval=0.5)
    assert job_d["spec"]["suspend"] is True
    assert job_d["metadata"]["labels"][queueing.QUEUE_LABEL] == QUEUE
    uid_d = job_d["metadata"]["uid"]
    deadline = time.monotonic() + 120
    while (await workload_of(kube, uid_d)) is None:
        assert time.monotonic() < deadline, "Kueue made no Workload for the queued Job"
        await asyncio.sleep(1)
    await kube.wait_for(
        MODELRUNS,
        "d",
        NS,
        lambda mr: (mr.get("status") or {}).get("reason") == "Queued",
        timeout=60,
    )
    await kube.delete(MODELRUNS, "d", NS)
    deadline = time.monotonic() + 120
    while (await workload_of(kube, uid_d)) is not None:
        assert time.monotonic() < deadline, "the deleted run's Workload is still there"
        await asyncio.sleep(1)

    # The three: never two running at once; the waiting ones Queued in Kueue's words.
    queued_messages: dict[str, set[str]] = {}
    deadline = time.monotonic() + 900
    try:
        while True:
            runs = {n: await kube.get(MODELRUNS, n, NS) for n in names}
            listed = (await kube.list(JOBS, NS))["items"]
            jobs = {j["metadata"]["name"]: j for j in listed if j["metadata"]["name"] in own}
            running = [
                n
                for n, j in jobs.items()
                if not j["spec"].get("suspend")
                and not (j.get("status") or {}).get("completionTime")
            ]
            assert len(running) <= 1, f"the queue has room for one run, yet {running} run"
            for n, mr in runs.items():
                st = mr.get("status") or {}
                if st.get("reason") == "Queued":
                    queued_messages.setdefault(n, set()).add(st.get("message", ""))
            if all(
                (mr.get("status") or {}).get("phase") in ("Succeeded", "Failed")
                and ((mr.get("status") or {}).get("labelbox") or {}).get("acknowledged")
                in ("COMPLETE", "FAILED")
                for mr in runs.values()
            ):
                break
            assert time.monotonic() < deadline, {n: mr.get("status") for n, mr in runs.items()}
            await asyncio.sleep(1)
    finally:
        print(installed.kubectl("get", "mr,jobs,pods,workloads", "-n", NS, "-o", "wide").stdout)

    for name in names:
        status = runs[name]["status"]
        assert status["phase"] == "Succeeded", (name, status)
        # One timeline; a queued run's Kueue messages ride on its first status, never a new one.
        assert deduped(labelbox.statuses(ids[name])) == FULL, name
        assert len(labelbox.imports(ids[name])) == 1, name
    waited = {n for n, msgs in queued_messages.items() if any(KUEUE_WAITING in m for m in msgs)}
    assert len(waited) >= 2, queued_messages
    seen = [m for msgs in queued_messages.values() for m in msgs]
    assert any("in the queue)" in m for m in seen), seen  # the visibility API's place
    for name in waited:
        told = [
            u.metadata
            for u in labelbox.status_updates(ids[name])
            if u.status == "EXPORTING_DATA" and u.metadata and u.metadata.get("reason") == "Queued"
        ]
        assert any(KUEUE_WAITING in str(meta.get("message")) for meta in told), (name, told)
    # Each ran in turn: no two Jobs' run times overlap.
    spans = sorted((j["status"]["startTime"], j["status"]["completionTime"]) for j in jobs.values())
    for (_, done), (start, _) in itertools.pairwise(spans):
        assert start >= done, f"runs overlapped: {spans}"
    try:
        await kube.get(JOBS, "d-train", NS)
        raise AssertionError("the deleted run's Job is still there")
    except NotFound:
        pass
