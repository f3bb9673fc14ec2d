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

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from lbtrain.kube import JOBS, MODELRUNS, PODS, KubeClient, load_config
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.images import ImageSet
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed import nodeconfig as nc
from lbtrain_trainer.hyperparams import RESULTS_KEY
from lbtrain_trainer.synthetic import make_dataset

from ..helm.helpers import CHART, Helm, set_args
from .helpers import imported_image_values, timeline

pytestmark = [pytest.mark.testbed, pytest.mark.trainer, pytest.mark.slow]

NS = "lbtrain"
API_KEY = "lb-api-key-scale"
TASK = "text_single_classification"
FULL = ["EXPORTING_DATA", "PREPARING_DATA", "TRAINING_MODEL", "COMPLETE"]
ONE, TWO = "Text - 1 process", "Text - 2 processes"


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
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ControlPlane]:
    """The chart with two templates of one task, one and two processes per pod, weights in the
    pod's workspace (one pod per run: no storage to share)."""
    real_node.kubectl("create", "namespace", NS, check=True)
    helm = Helm(real_node.bin_dir / "helm", tmp_path_factory.mktemp("helm"), real_node.kubeconfig)
    values = {
        **imported_image_values(images),
        "labelbox.endpoint": labelbox.endpoint,
        "labelbox.restEndpoint": labelbox.rest_endpoint,
        "labelbox.apiKey": API_KEY,
        "artifacts.perRunClaim.enabled": False,
        "trainingTemplates.templates.text-one": template(ONE),
        "trainingTemplates.templates.text-two": template(TWO, numProcPerNode=2),
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
