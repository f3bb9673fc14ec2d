"""Per-run artifact claims on a real node: the chart with its default storage (a claim per run),
two runs trained at once, and each run's weights on its own volume only.

The testbed has no storage provisioner, so the test plays the cluster admin: a StorageClass
without a provisioner and two static hostPath PersistentVolumes of it, which the
PersistentVolume controller binds to the runs' claims as they are created. Each volume is a
folder of this machine, so the test reads what each run wrote.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from lbtrain.kube import MODELRUNS, PERSISTENTVOLUMECLAIMS, PODS, KubeClient, load_config
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.images import ImageSet
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed import nodeconfig as nc
from lbtrain_trainer.synthetic import make_dataset

from ..helm.helpers import CHART, Helm, set_args
from .helpers import imported_image_values

pytestmark = [pytest.mark.testbed, pytest.mark.trainer, pytest.mark.slow]

NS = "lbtrain"
API_KEY = "lb-api-key-storage"
TEXT_TYPE = "text_single_classification"
STORAGE_CLASS = "lbtrain-e2e-static"
RUNS = ("store-a", "store-b")


def static_volume(name: str, folder: Path) -> dict[str, Any]:
    """A PersistentVolume on `folder` of the class the runs' claims ask for, bound to nobody."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o1777)  # the trainer runs as uid 10001; hostPath keeps the mode
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "storageClassName": STORAGE_CLASS,
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": str(folder), "type": "Directory"},
            "persistentVolumeReclaimPolicy": "Retain",
        },
    }


@pytest.fixture(scope="module")
def labelbox() -> Iterator[FakeLabelbox]:
    with FakeLabelbox.in_thread(api_key=API_KEY, host=nc.node_ip()) as fake:
        yield fake


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("volumes")
    return {f"lbtrain-e2e-pv-{n}": root / f"pv-{n}" for n in range(len(RUNS))}


@pytest.fixture(scope="module")
def installed(
    real_node: ControlPlane,
    images: ImageSet,
    labelbox: FakeLabelbox,
    volumes: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ControlPlane]:
    """The chart with its default per-run claims (of the static class), the volumes ready."""
    kubectl = real_node.kubectl
    kubectl("create", "namespace", NS, check=True)
    storage_class = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "Immediate",
    }
    kubectl("apply", "-f", "-", input=json.dumps(storage_class), check=True)
    for name, folder in volumes.items():
        kubectl("apply", "-f", "-", input=json.dumps(static_volume(name, folder)), check=True)
    helm = Helm(real_node.bin_dir / "helm", tmp_path_factory.mktemp("helm"), real_node.kubeconfig)
    values = {
        **imported_image_values(images),
        "labelbox.endpoint": labelbox.endpoint,
        "labelbox.restEndpoint": labelbox.rest_endpoint,
        "labelbox.apiKey": API_KEY,
        # The chart's storage defaults; only the class and size fit this node's volumes.
        "artifacts.perRunClaim.storageClassName": STORAGE_CLASS,
        "artifacts.perRunClaim.size": "1Gi",
        # Two runs at once on 2 cores: small requests.
        "trainingTemplates.templates.text-single-classification.resources": {
            "requests": {"cpu": "100m", "memory": "1Gi"},
            "limits": {"memory": "4Gi"},
        },
        "trainingTemplates.templates.text-single-classification.hyperparameters": {
            "epochs": 1,
            "model_size": "production",
        },
        "operator.extraArgs": ["--resync-interval=2", "--report-backoff-max=1"],
    }
    result = helm(
        "install", "lbtrain", str(CHART), f"--namespace={NS}", "--wait", "--timeout=5m",
        *set_args(values), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    yield real_node
    kubectl("delete", "mr", "--all", "-n", NS, "--wait=false")
    helm("uninstall", "lbtrain", f"--namespace={NS}", "--wait", check=False)


@pytest.fixture
async def kube(installed: ControlPlane) -> AsyncIterator[KubeClient]:
    async with KubeClient(load_config(str(installed.kubeconfig))) as client:
        yield client


def start(plane: ControlPlane, labelbox: FakeLabelbox, name: str) -> str:
    run_id = fake_cuid(name)
    data = make_dataset(TEXT_TYPE, 40, media_url_for=labelbox.add_media, model_run_id=run_id)
    labelbox.add_model_run(run_id, rows=data.rows, name=f"e2e {name}")
    mr = {
        "apiVersion": "lbtrain.io/v1alpha1",
        "kind": "ModelRun",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"modelRunId": run_id, "modelType": TEXT_TYPE, "modelId": fake_cuid("model1")},
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(mr), check=True)
    return run_id


async def finished(kube: KubeClient, name: str, timeout: float) -> dict[str, Any]:
    def done(mr: dict[str, Any]) -> bool:
        st = mr.get("status") or {}
        acked = (st.get("labelbox") or {}).get("acknowledged")
        return st.get("phase") in ("Succeeded", "Failed") and acked in ("COMPLETE", "FAILED")

    return dict((await kube.wait_for(MODELRUNS, name, NS, done, timeout=timeout))["status"])


@pytest.mark.timeout(900)
async def test_two_runs_at_once_each_write_only_their_own_claim(
    installed: ControlPlane,
    kube: KubeClient,
    labelbox: FakeLabelbox,
    volumes: dict[str, Path],
) -> None:
    ids = {name: start(installed, labelbox, name) for name in RUNS}
    # Both pods exist at once: neither waits for the other's volume.
    for _ in range(600):
        pods = [
            (await kube.list(PODS, NS, label_selector=f"lbtrain.io/model-run={name}"))["items"]
            for name in RUNS
        ]
        if all(pods):
            break
        await asyncio.sleep(0.5)
    assert all(pods), "both runs have a pod"
    try:
        done = {name: await finished(kube, name, 700) for name in RUNS}
    finally:
        print(installed.kubectl("get", "mr,pvc,pv,pods", "-n", NS, "-o", "wide").stdout)
        print(
            installed.kubectl("get", "events", "-n", NS, "--sort-by=.lastTimestamp").stdout[-4000:]
        )
    for name, status in done.items():
        assert status["phase"] == "Succeeded", (name, status)
        assert labelbox.statuses(ids[name])[-1] == "COMPLETE"
    for name in RUNS:
        claim = await kube.get(PERSISTENTVOLUMECLAIMS, f"{name}-artifacts", NS)
        assert claim["status"]["phase"] == "Bound"
        assert claim["metadata"]["ownerReferences"][0]["name"] == name
        folder = volumes[claim["spec"]["volumeName"]]
        # This run's weights, and nothing of the other run's.
        assert [p.name for p in folder.iterdir()] == [ids[name]], (name, list(folder.iterdir()))
        assert any((folder / ids[name]).rglob("*")), f"{name} wrote its weights"
    bound = {
        (await kube.get(PERSISTENTVOLUMECLAIMS, f"{n}-artifacts", NS))["spec"]["volumeName"]
        for n in RUNS
    }
    assert len(bound) == len(RUNS), "one volume per run"
