"""What a user installs, on a real node: the two images built by `make images` and the chart,
pushed by `make push`'s script to a registry (the testbed's, on loopback), `helm install` of the
chart from that registry with `imageRegistry` set, a signed POST /model_run through the
webhook's Service, and a trainer pod whose three stage containers really run, until Labelbox
reads COMPLETE. Then the failures a user meets on a real cluster, each with the reason and the
Labelbox message they should see: OOMKilled, an image that cannot be pulled, data that cannot
train, a cancelled run, and the operator's own pod deleted mid-run.

The images are pushed under a tag unique to the session, so the node pulls them by name from
the registry (the `ctr import`ed `localhost/...` refs of the same images stay, for the other
tests: removing a ref can remove the other refs of the same image). The chart's values differ
from its defaults only in `imageRegistry`, the Labelbox endpoint (the fake Labelbox, on the
node's bridge address so pods reach it), the secrets and, because this node has 2 cores, the CPU
request of the one template trained here, and storage: the testbed has no provisioner for the
per-run claims of the defaults, so the templates mount one shared claim (on a single node
ReadWriteOnce serves every run), bound to a hostPath PersistentVolume as a cluster admin would
provide. Per-run claims on this node are tests/e2e/test_storage.py's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from lbtrain.kube import JOBS, MODELRUNS, PODS, KubeClient, NotFound, load_config
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.images import ImageSet
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed import nodeconfig as nc
from lbtrain_dev.testbed.node import NodeError, leftovers, trust_registry
from lbtrain_dev.testbed.registry import Registry
from lbtrain_trainer.synthetic import make_dataset

from ..helm.helpers import REPO, Helm, set_args
from .helpers import check_progress, progress_of, timeline

pytestmark = [pytest.mark.testbed, pytest.mark.trainer, pytest.mark.slow]

RELEASE_NS = "lbtrain"
OOM_NS = "lbtrain-oom"
PULL_NS = "lbtrain-pull"
API_KEY = "lb-api-key-real-node"
WEBHOOK_SECRET = "real-node-webhook-secret-" + secrets.token_hex(8)
TEXT_TYPE = "text_single_classification"
# The small templates of the failure tests list under a name of their own: the watched namespaces
# also hold the chart's default templates, which serve TEXT_TYPE.
SMALL_TYPE = "Text small"
FULL = ["EXPORTING_DATA", "PREPARING_DATA", "TRAINING_MODEL", "COMPLETE"]
# A closed port on loopback: the pull fails at once, and nothing leaves the machine.
UNPULLABLE = "127.0.0.1:1/none:0"


def sign(body: bytes) -> str:
    return "sha1=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha1).hexdigest()


@dataclass(frozen=True)
class Pushed:
    """What images/push.sh answered: the registry path, the tag, each image's manifest digest."""

    registry: str  # 127.0.0.1:<port>/ml, the chart's imageRegistry
    tag: str
    digests: dict[str, str]  # image name (lbtrain, lbtrain-trainer) -> sha256:...
    chart: str  # oci://.../charts/lbtrain (without the version)

    @property
    def trainer(self) -> str:
        """The trainer image by the name the chart's templates pull it by."""
        return f"{self.registry}/lbtrain-trainer:{self.tag}"


@pytest.fixture(scope="module")
def registry(real_node: ControlPlane) -> Iterator[Registry]:
    """The testbed's registry, trusted by the node's containerd over plain HTTP."""
    with Registry() as reg:
        trust_registry(real_node.node_paths, reg.host)
        yield reg


@pytest.fixture(scope="module")
def pushed(real_node: ControlPlane, registry: Registry, images: ImageSet) -> Pushed:
    """Both images and the chart, pushed as `make push` pushes them, under a tag unique to this
    session (a SemVer pre-release of the project's version, as the chart's version must be)."""
    target = f"{registry.host}/ml"
    version = str(yaml.safe_load((REPO / "deploy/helm/lbtrain/Chart.yaml").read_text())["version"])
    tag = f"{version}-e2e.t{secrets.token_hex(4)}"
    env = {
        **os.environ, "REGISTRY": target, "TAG": tag, "PLAIN_HTTP": "1",
        "COMPRESSION_LEVEL": "1", "HELM": str(real_node.bin_dir / "helm"),
        "NO_PROXY": "127.0.0.1,localhost",
    }  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(REPO / "images" / "push.sh"), str(images.lbtrain.archive),
         str(images.trainer.archive)],
        capture_output=True, text=True, env=env, timeout=1500, check=False,
    )  # fmt: skip
    print(f"images/push.sh took {time.monotonic() - started:.1f}s:\n{done.stderr[-3000:]}")
    assert done.returncode == 0, done.stderr
    *lines, chart = done.stdout.splitlines()  # `<ref> <digest>` per image, then the chart
    digests = {}
    for line in lines:
        ref, digest = line.split()
        digests[ref.removeprefix(f"{target}/").removesuffix(f":{tag}")] = digest
    assert set(digests) == {"lbtrain", "lbtrain-trainer"}, done.stdout
    assert chart == f"oci://{target}/charts/lbtrain:{tag}"
    return Pushed(target, tag, digests, f"oci://{target}/charts/lbtrain")


@pytest.fixture(scope="module")
def labelbox() -> Iterator[FakeLabelbox]:
    with FakeLabelbox.in_thread(api_key=API_KEY, host=nc.node_ip()) as fake:
        yield fake


@pytest.fixture(scope="module")
def installed(
    real_node: ControlPlane,
    pushed: Pushed,
    labelbox: FakeLabelbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ControlPlane]:
    """The chart, installed from the registry with its defaults and waited for (webhook and
    operator pods Ready: their image pulled from the registry)."""
    kubectl = real_node.kubectl
    for ns in (RELEASE_NS, OOM_NS, PULL_NS):
        kubectl("create", "namespace", ns, check=True)
    # The default templates' artifacts claim (the chart creates it in every watched namespace) on
    # a folder of this machine.
    for ns in (RELEASE_NS, OOM_NS, PULL_NS):
        real_node.bind_hostpath_claim(
            tmp_path_factory.mktemp(f"artifacts-{ns}"), ns, "lbtrain-artifacts"
        )
    home = tmp_path_factory.mktemp("helm")
    helm = Helm(real_node.bin_dir / "helm", home, real_node.kubeconfig)
    values = {
        "imageRegistry": pushed.registry,
        "labelbox.endpoint": labelbox.endpoint,
        "labelbox.restEndpoint": labelbox.rest_endpoint,
        "labelbox.apiKey": API_KEY,
        "webhook.secret.value": WEBHOOK_SECRET,
        "operator.watchNamespaces": [OOM_NS, PULL_NS],
        "artifacts.persistentVolumeClaim.create": True,
        "artifacts.persistentVolumeClaim.accessModes": ["ReadWriteOnce"],
        # The one change for this 2-core node: the trained template asks for 1 CPU, not 4.
        "trainingTemplates.templates.text-single-classification.resources": {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"memory": "4Gi"},
        },
        # Faster loops for a test, and text logs to read in the failure output.
        "operator.extraArgs": ["--resync-interval=2", "--report-backoff-max=1"],
        "operator.progressInterval": 1,
    }
    result = helm(
        "install", "lbtrain", pushed.chart, f"--version={pushed.tag}", "--plain-http",
        f"--namespace={RELEASE_NS}", "--wait", "--timeout=5m", *set_args(values), check=False,
    )  # fmt: skip
    if result.returncode != 0:
        print(kubectl("get", "pods", "-A", "-o", "wide").stdout)
        print(kubectl("describe", "pods", "-n", RELEASE_NS).stdout[-6000:])
    assert result.returncode == 0, result.stderr
    # What the chart README tells a user to run next: the chart's test Pod sends a signed
    # GET /models to the webhook's Service by its DNS name (resolved by the node's CoreDNS).
    tested = helm("test", "lbtrain", f"--namespace={RELEASE_NS}", "--timeout=100s", check=False)
    if tested.returncode != 0:
        print(kubectl("logs", "lbtrain-test-models", "-n", RELEASE_NS).stdout[-3000:])
        print(kubectl("describe", "pod", "lbtrain-test-models", "-n", RELEASE_NS).stdout[-3000:])
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert re.search(r"Phase:\s+Succeeded", tested.stdout), tested.stdout
    yield real_node
    for ns in (OOM_NS, PULL_NS):
        kubectl("delete", "mr", "--all", "-n", ns, "--wait=false")
    helm("uninstall", "lbtrain", f"--namespace={RELEASE_NS}", "--wait", check=False)


@pytest.fixture
async def kube(installed: ControlPlane) -> AsyncIterator[KubeClient]:
    async with KubeClient(load_config(str(installed.kubeconfig))) as client:
        yield client


async def service_url(plane: ControlPlane, timeout: float = 60) -> str:
    """The webhook's Service, once it answers: `helm install --wait` sees the pods Ready a
    moment before kube-proxy has their endpoints (until then the ClusterIP refuses)."""
    done = plane.kubectl(
        "get", "service", "lbtrain-webhook", "-n", RELEASE_NS,
        "-o", "jsonpath={.spec.clusterIP}:{.spec.ports[0].port}", check=True,
    )  # fmt: skip
    url = f"http://{done.stdout.strip()}"
    async with aiohttp.ClientSession() as session:
        for _ in range(int(timeout * 4)):
            try:
                async with session.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        return url
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25)
    raise AssertionError(f"the webhook's Service {url} did not answer in {timeout}s")


def seed(labelbox: FakeLabelbox, run_id: str, rows: int = 40, *, labelled: bool = True) -> None:
    data = make_dataset(TEXT_TYPE, rows, media_url_for=labelbox.add_media, model_run_id=run_id)
    run_rows = data.rows
    if not labelled:  # export rows whose run has no label: the trainer exits 65
        for row in run_rows:
            for experiment in row.get("experiments", {}).values():
                for run in experiment.get("runs", {}).values():
                    run["labels"] = []
    labelbox.add_model_run(run_id, rows=run_rows, name=f"e2e {run_id}")


async def post_model_run(url: str, run_id: str, model_type: str = TEXT_TYPE) -> str:
    body = json.dumps(
        {"modelRunId": run_id, "modelType": model_type, "modelId": fake_cuid("model1"),
         "organizationId": fake_cuid("org1")}
    ).encode()  # fmt: skip
    headers = {"X-Hub-Signature": sign(body), "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/model_run", data=body, headers=headers) as resp,
    ):
        assert resp.status == 201, await resp.text()
    return run_id


async def model_run(kube: KubeClient, run_id: str, namespace: str = RELEASE_NS) -> dict[str, Any]:
    for _ in range(100):
        for mr in (await kube.list(MODELRUNS, namespace))["items"]:
            if mr["spec"]["modelRunId"] == run_id:
                return dict(mr)
        await asyncio.sleep(0.2)
    raise AssertionError(f"no ModelRun for {run_id} in {namespace}")


async def until_phase(
    kube: KubeClient, name: str, namespace: str, phases: set[str], timeout: float
) -> dict[str, Any]:
    def done(mr: dict[str, Any]) -> bool:
        st = mr.get("status") or {}
        acknowledged = (st.get("labelbox") or {}).get("acknowledged")
        return st.get("phase") in phases and acknowledged in ("COMPLETE", "FAILED")

    return dict(await kube.wait_for(MODELRUNS, name, namespace, done, timeout=timeout))


async def trainer_pod(kube: KubeClient, name: str, namespace: str) -> dict[str, Any]:
    for _ in range(300):
        pods = await kube.list(PODS, namespace, label_selector=f"lbtrain.io/model-run={name}")
        if pods["items"]:
            return dict(pods["items"][0])
        await asyncio.sleep(0.2)
    raise AssertionError(f"no trainer pod for {name}")


async def pod_gone(kube: KubeClient, name: str, namespace: str, timeout: float) -> bool:
    for _ in range(int(timeout * 5)):
        try:
            await kube.get(PODS, name, namespace)
        except NotFound:
            return True
        await asyncio.sleep(0.2)
    return False


def show(plane: ControlPlane, namespace: str) -> str:
    return "\n".join(
        plane.kubectl(*args).stdout[-3000:]
        for args in (
            ("get", "mr,jobs,pods", "-n", namespace, "-o", "wide"),
            ("get", "events", "-n", namespace, "--sort-by=.lastTimestamp"),
            ("logs", "-n", RELEASE_NS, "deploy/lbtrain-operator", "--tail=40"),
        )
    )


async def progress_column(plane: ControlPlane, name: str, timeout: float = 600) -> list[str]:
    """The PROGRESS column of `kubectl get mr NAME`, each change, until the run has finished."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = plane.kubectl(
            "get", "mr", name, "-n", RELEASE_NS, "-o",
            "custom-columns=PROGRESS:.status.progress.text,PHASE:.status.phase", "--no-headers",
        )  # fmt: skip
        text, _, phase = done.stdout.strip().rpartition(" ")
        text = text.strip()
        if text and text != "<none>" and (not seen or seen[-1] != text):
            seen.append(text)
        if phase in ("Succeeded", "Failed"):
            return seen
        await asyncio.sleep(0.5)
    return seen


# --- the promise -------------------------------------------------------------------------------
def pulled_image_ids(pod: dict[str, Any]) -> dict[str, str]:
    statuses = pod["status"].get("initContainerStatuses", []) + pod["status"]["containerStatuses"]
    return {s["name"]: s["imageID"] for s in statuses}


@pytest.mark.timeout(1800)
async def test_helm_install_then_train_model_completes_on_a_real_pod(
    installed: ControlPlane, kube: KubeClient, labelbox: FakeLabelbox, pushed: Pushed
) -> None:
    url = await service_url(installed)
    async with aiohttp.ClientSession() as session:
        headers = {"X-Hub-Signature": sign(b"")}
        async with session.get(f"{url}/models", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert TEXT_TYPE in await resp.json()
    run_id = fake_cuid("real-node-complete-01")
    seed(labelbox, run_id)
    await post_model_run(url, run_id)
    name = (await model_run(kube, run_id))["metadata"]["name"]
    try:
        columns = asyncio.create_task(progress_column(installed, name))
        done = await until_phase(kube, name, RELEASE_NS, {"Succeeded", "Failed"}, 600)
    finally:
        print(show(installed, RELEASE_NS))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    updates = labelbox.status_updates(run_id)
    assert timeline(updates) == FULL
    # Live progress (docs/progress.md): rank 0 reported through the operator's Service with its
    # projected token; Labelbox got it in order before COMPLETE, and `kubectl get` showed it
    # change while the run trained.
    told = check_progress(updates)
    assert told[-1]["epoch"] == told[-1]["epochs"]
    # validated after every epoch (validate_every_epochs 1): the last report carries the last
    # epoch's accuracy on the validation split, and so does the run's PROGRESS column
    assert told[-1]["validationMetric"] == "accuracy", told[-1]
    assert 0.0 <= float(told[-1]["validationValue"]) <= 1.0, told[-1]
    assert " · accuracy " in done["status"]["progress"]["text"], done["status"]["progress"]
    seen = await columns
    assert len(seen) >= 2 and seen[-1].startswith("epoch "), seen
    predictions = labelbox.predictions(run_id)
    assert [p for p in predictions if "answer" in p], "predictions reached Labelbox"
    assert [p for p in predictions if "metricValue" in p], "metrics reached Labelbox"
    assert "lbtrain_results" in labelbox.config(run_id)
    # Each stage ran in its own container of the trainer image; `kubectl logs` reads each.
    pod = await trainer_pod(kube, name, RELEASE_NS)
    statuses = pod["status"]["initContainerStatuses"] + pod["status"]["containerStatuses"]
    assert {s["name"]: s["state"]["terminated"]["exitCode"] for s in statuses} == {
        "export": 0, "prepare": 0, "train": 0,
    }  # fmt: skip
    for stage in ("export", "prepare", "train"):
        logs = installed.kubectl("logs", "-n", RELEASE_NS, pod["metadata"]["name"], "-c", stage)
        assert logs.returncode == 0 and logs.stdout.strip(), (stage, logs.stderr)
    assert pod["spec"]["nodeName"] == nc.NODE_NAME
    # Every container ran the trainer image the node pulled from the registry by its name: the
    # image ID is the registry's manifest digest of the session's tag.
    trainer = f"{pushed.registry}/lbtrain-trainer"
    assert {c["image"] for c in pod["spec"]["initContainers"] + pod["spec"]["containers"]} == {
        f"{trainer}:{pushed.tag}"
    }
    # (containerd names the image by one of its repo digests: the same manifest pushed by an
    # earlier session under another port would be named by that one, hence the suffix.)
    ids = pulled_image_ids(pod)
    assert set(ids) == {"export", "prepare", "train"}
    assert all(
        i.endswith(f"/ml/lbtrain-trainer@{pushed.digests['lbtrain-trainer']}") for i in ids.values()
    ), ids
    webhook = await kube.list(
        PODS, RELEASE_NS, label_selector="app.kubernetes.io/component=webhook"
    )
    assert webhook["items"], "the webhook's pods"
    for item in webhook["items"]:
        ids = pulled_image_ids(item)
        assert all(i.endswith(f"/ml/lbtrain@{pushed.digests['lbtrain']}") for i in ids.values()), (
            ids
        )


def test_a_second_node_is_refused_and_leaves_the_running_one_alone(
    installed: ControlPlane, tmp_path: Path
) -> None:
    """One node per machine: a second `up --node` says which run folder holds it, and its
    clean-up (the demo's `finally`, a test's teardown) must not take the running node's bridge
    or kube-proxy rules with it: that once cut the API server off mid-run."""
    second = ControlPlane(installed.bin_dir, tmp_path, node_store=Path(installed.state.node_store))
    with pytest.raises(NodeError, match=str(installed.run_dir)):
        second.start(timeout=30)
    second.stop()
    assert installed.kubectl("get", "--raw", "/readyz").returncode == 0
    assert installed.kubectl("get", "pods", "-n", RELEASE_NS).returncode == 0
    assert not leftovers(tmp_path, Path(installed.state.node_store)).processes


# --- real failures -----------------------------------------------------------------------------
def small_template(namespace: str, image: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lbtrain.io/v1alpha1",
        "kind": "TrainingTemplate",
        "metadata": {"name": "text", "namespace": namespace},
        "spec": {
            "modelType": SMALL_TYPE,
            "task": TEXT_TYPE,
            "image": image,
            "gpus": 1,
            "pretrained": "/opt/lbtrain/pretrained",
            "backoffLimit": 0,
            "hyperparameters": {"epochs": 1, "model_size": "production"},
            **spec,
        },
    }


async def run_by_hand(plane: ControlPlane, namespace: str, run_id: str) -> str:
    """A ModelRun applied with kubectl, as a user debugging would."""
    name = f"mr-{run_id}"
    mr = {
        "apiVersion": "lbtrain.io/v1alpha1",
        "kind": "ModelRun",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"modelRunId": run_id, "modelType": SMALL_TYPE, "modelId": fake_cuid("model1")},
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(mr), check=True)
    return name


@pytest.mark.timeout(600)
async def test_a_tiny_memory_limit_is_oomkilled_and_labelbox_says_so(
    installed: ControlPlane, kube: KubeClient, labelbox: FakeLabelbox, pushed: Pushed
) -> None:
    # The trainer by its registry name, as the chart's templates name it: once the node has
    # pulled that name, containerd's CRI may stop answering for the `ctr import`ed localhost/
    # name of the same image for a while (the same image ID; seen as ImagePullFailed).
    template = small_template(
        OOM_NS,
        pushed.trainer,
        resources={"requests": {"cpu": "100m"}, "limits": {"memory": "48Mi"}},
    )
    installed.kubectl("apply", "-f", "-", input=json.dumps(template), check=True)
    run_id = fake_cuid("real-node-oom-01")
    seed(labelbox, run_id)
    name = await run_by_hand(installed, OOM_NS, run_id)
    try:
        done = await until_phase(kube, name, OOM_NS, {"Failed", "Succeeded"}, 300)
    finally:
        print(show(installed, OOM_NS))
    assert done["status"]["phase"] == "Failed"
    assert done["status"]["reason"] == "OOMKilled", done["status"]
    last = labelbox.status_updates(run_id)[-1]
    assert last.status == "FAILED"
    assert last.error_message and "ran out of memory (OOMKilled" in last.error_message


@pytest.mark.timeout(600)
async def test_an_unpullable_image_fails_the_run_as_image_pull_failed(
    installed: ControlPlane, kube: KubeClient, labelbox: FakeLabelbox
) -> None:
    template = small_template(PULL_NS, UNPULLABLE, imagePullGracePeriodSeconds=5)
    installed.kubectl("apply", "-f", "-", input=json.dumps(template), check=True)
    run_id = fake_cuid("real-node-pull-01")
    seed(labelbox, run_id)
    name = await run_by_hand(installed, PULL_NS, run_id)
    try:
        done = await until_phase(kube, name, PULL_NS, {"Failed", "Succeeded"}, 300)
    finally:
        print(show(installed, PULL_NS))
    assert done["status"]["reason"] == "ImagePullFailed", done["status"]
    last = labelbox.status_updates(run_id)[-1]
    assert last.status == "FAILED"
    assert last.error_message and f"cannot pull image {UNPULLABLE}" in last.error_message
    # The pull really failed at the node's containerd, as a user's `kubectl describe` shows.
    events = installed.kubectl("get", "events", "-n", PULL_NS, "-o", "json", check=True)
    reasons = {e["reason"] for e in json.loads(events.stdout)["items"]}
    assert reasons & {"Failed", "BackOff"}, reasons


@pytest.mark.timeout(600)
async def test_data_that_cannot_train_exits_65_and_is_not_retried(
    installed: ControlPlane, kube: KubeClient, labelbox: FakeLabelbox
) -> None:
    run_id = fake_cuid("real-node-baddata-01")
    seed(labelbox, run_id, labelled=False)
    await post_model_run(await service_url(installed), run_id)
    name = (await model_run(kube, run_id))["metadata"]["name"]
    try:
        done = await until_phase(kube, name, RELEASE_NS, {"Failed", "Succeeded"}, 400)
    finally:
        print(show(installed, RELEASE_NS))
    assert done["status"]["reason"] == "BadInput", done["status"]
    last = labelbox.status_updates(run_id)[-1]
    assert last.status == "FAILED" and last.error_message
    assert "BadInput: the data cannot train: no data row of the model run has a label" in (
        last.error_message
    )
    pods = await kube.list(PODS, RELEASE_NS, label_selector=f"lbtrain.io/model-run={name}")
    assert len(pods["items"]) == 1, "exit 65 is never retried"
    [pod] = pods["items"]
    exits = {
        s["name"]: (s["state"].get("terminated") or {}).get("exitCode")
        for s in pod["status"]["initContainerStatuses"]
    }
    assert 65 in exits.values(), exits


async def start_run(
    installed: ControlPlane, kube: KubeClient, labelbox: FakeLabelbox, run_id: str
) -> str:
    """Seed `run_id`, post it to the webhook, wait until it exports; answer its ModelRun name."""
    seed(labelbox, run_id)
    await post_model_run(await service_url(installed), run_id)
    name = str((await model_run(kube, run_id))["metadata"]["name"])
    await labelbox.wait_for_status(run_id, "EXPORTING_DATA", timeout=300)
    return name


@pytest.mark.timeout(600)
async def test_deleting_a_running_model_run_stops_its_pod_and_tells_labelbox(
    installed: ControlPlane, kube: KubeClient, labelbox: FakeLabelbox
) -> None:
    run_id = fake_cuid("real-node-cancel-01")
    name = await start_run(installed, kube, labelbox, run_id)
    pod = await trainer_pod(kube, name, RELEASE_NS)
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    installed.kubectl("delete", "mr", name, "-n", RELEASE_NS, "--timeout=120s", check=True)
    last = await labelbox.wait_for_status(run_id, "FAILED", timeout=60)
    assert last.error_message and "cancelled" in last.error_message.lower()
    # The trainer (PID 1 in its container) stops on SIGTERM: the pod, and its GPU, are gone
    # well before the kubelet's SIGKILL at the end of the grace period.
    assert await pod_gone(kube, pod["metadata"]["name"], RELEASE_NS, timeout=grace - 5)


@pytest.mark.timeout(900)
async def test_the_operator_pod_deleted_mid_run_comes_back_and_finishes_the_run(
    installed: ControlPlane, kube: KubeClient, labelbox: FakeLabelbox
) -> None:
    run_id = fake_cuid("real-node-restart-01")
    name = await start_run(installed, kube, labelbox, run_id)
    installed.kubectl(
        "delete", "pod", "-n", RELEASE_NS, "-l", "app.kubernetes.io/component=operator",
        "--wait=false", check=True,
    )  # fmt: skip
    try:
        done = await until_phase(kube, name, RELEASE_NS, {"Succeeded", "Failed"}, 700)
    finally:
        print(show(installed, RELEASE_NS))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    jobs = await kube.list(JOBS, RELEASE_NS, label_selector=f"lbtrain.io/model-run={name}")
    assert len(jobs["items"]) == 1, "one Job, whatever the operator's restarts"
    # One ordered timeline: every stage, in order, COMPLETE last. docs/operator.md "Restarts":
    # the call in flight when the operator stopped may be sent once more, word for word. Live
    # progress adds TRAINING_MODEL calls of its own (each with a newer `progress`): not counted.
    updates = labelbox.status_updates(run_id)
    assert timeline(updates) == FULL
    stages = [u.status for u in updates if progress_of(u) is None]
    assert len(stages) <= len(FULL) + 1, [u.status for u in updates]
