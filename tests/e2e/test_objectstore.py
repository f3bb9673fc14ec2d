"""An ``s3://`` artifact destination on a real node: the chart installed, a TrainingTemplate that
points its runs at a bucket of a real S3 server (versitygw) with the keys from a Secret, and a
run that ends COMPLETE with its weights and checkpoint in the bucket. Then the same template
with a bucket that does not exist: the export stage's probe exits 78 and the run fails at once,
never retried, as ArtifactDestinationUnusable, without the secret in anything Labelbox reads.

The server listens on the node's bridge address, where pods reach it (as they reach the fake
Labelbox); the trainer finds it through the standard ``AWS_ENDPOINT_URL``, set by the template's
``env``, and its keys through ``env`` entries that read a Secret (``valueFrom.secretKeyRef``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from lbtrain.kube import PODS, KubeClient, load_config
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.images import ImageSet
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed import nodeconfig as nc
from lbtrain_dev.testbed.s3server import S3Server

from ..helm.helpers import CHART, Helm, set_args
from .helpers import BUCKET, bucket_env, bucket_secret, imported_image_values, timeline
from .test_real_node import (
    API_KEY,
    FULL,
    WEBHOOK_SECRET,
    run_by_hand,
    seed,
    show,
    small_template,
    until_phase,
)

pytestmark = [pytest.mark.testbed, pytest.mark.trainer, pytest.mark.slow]

RELEASE_NS = "lbtrain"
S3_NS = "lbtrain-s3"


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
    """The chart, its operator watching S3_NS, and there the Secret with the bucket's keys."""
    kubectl = real_node.kubectl
    for ns in (RELEASE_NS, S3_NS):
        kubectl("create", "namespace", ns, check=True)
    real_node.bind_hostpath_claim(
        tmp_path_factory.mktemp("artifacts"), RELEASE_NS, "lbtrain-artifacts"
    )
    secret = bucket_secret(s3, S3_NS)
    kubectl("apply", "-f", "-", input=json.dumps(secret), check=True)
    helm = Helm(real_node.bin_dir / "helm", tmp_path_factory.mktemp("helm"), real_node.kubeconfig)
    values = {
        **imported_image_values(images),
        "labelbox.endpoint": labelbox.endpoint,
        "labelbox.restEndpoint": labelbox.rest_endpoint,
        "labelbox.apiKey": API_KEY,
        "webhook.secret.value": WEBHOOK_SECRET,
        "operator.watchNamespaces": [S3_NS],
        "operator.extraArgs": ["--resync-interval=2", "--report-backoff-max=1"],
    }
    result = helm(
        "install", "lbtrain", str(CHART), f"--namespace={RELEASE_NS}", "--wait",
        "--timeout=5m", *set_args(values), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    yield real_node
    kubectl("delete", "mr", "--all", "-n", S3_NS, "--wait=false")
    helm("uninstall", "lbtrain", f"--namespace={RELEASE_NS}", "--wait", check=False)


@pytest.fixture
async def kube(installed: ControlPlane) -> AsyncIterator[KubeClient]:
    async with KubeClient(load_config(str(installed.kubeconfig))) as client:
        yield client


def apply_template(
    plane: ControlPlane, images: ImageSet, s3: S3Server, bucket: str, **spec: Any
) -> None:
    template = small_template(
        S3_NS,
        images.trainer.ref,
        artifacts={"destination": f"s3://{bucket}/lbtrain/{{modelRunId}}"},
        env=bucket_env(s3),
        resources={"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        **spec,
    )
    plane.kubectl("apply", "-f", "-", input=json.dumps(template), check=True)


@pytest.mark.timeout(900)
async def test_a_run_with_an_s3_destination_completes_with_its_weights_in_the_bucket(
    installed: ControlPlane,
    kube: KubeClient,
    labelbox: FakeLabelbox,
    images: ImageSet,
    s3: S3Server,
) -> None:
    apply_template(installed, images, s3, BUCKET)
    run_id = fake_cuid("real-node-s3-01")
    seed(labelbox, run_id)
    name = await run_by_hand(installed, S3_NS, run_id)
    try:
        done = await until_phase(kube, name, S3_NS, {"Succeeded", "Failed"}, 600)
    finally:
        print(show(installed, S3_NS))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert timeline(labelbox.status_updates(run_id)) == FULL
    folder = s3.bucket_path(BUCKET) / "lbtrain" / run_id
    for relative in ("model/weights.pt", "model/model.json", "checkpoint/last.pt"):
        assert (folder / relative).stat().st_size > 0, relative
    assert not [p for p in folder.rglob("*") if ".lbtrain-probe-" in p.name]


@pytest.mark.timeout(600)
async def test_a_missing_bucket_fails_the_run_at_once_as_artifact_destination_unusable(
    installed: ControlPlane,
    kube: KubeClient,
    labelbox: FakeLabelbox,
    images: ImageSet,
    s3: S3Server,
) -> None:
    # Retries allowed: exit 78 must fail the run anyway, on its first pod.
    apply_template(installed, images, s3, "no-such-bucket", backoffLimit=3)
    run_id = fake_cuid("real-node-s3-nobucket-01")
    seed(labelbox, run_id)
    name = await run_by_hand(installed, S3_NS, run_id)
    try:
        done = await until_phase(kube, name, S3_NS, {"Succeeded", "Failed"}, 300)
    finally:
        print(show(installed, S3_NS))
    assert done["status"]["reason"] == "ArtifactDestinationUnusable", done["status"]
    last = labelbox.status_updates(run_id)[-1]
    assert last.status == "FAILED" and last.error_message
    assert "bucket does not exist" in last.error_message
    assert s3.secret_key not in last.error_message
    assert s3.secret_key not in json.dumps(done["status"])
    pods = await kube.list(PODS, S3_NS, label_selector=f"lbtrain.io/model-run={name}")
    assert len(pods["items"]) == 1, "exit 78 is never retried"
    exits = {
        s["name"]: (s["state"].get("terminated") or {}).get("exitCode")
        for s in pods["items"][0]["status"]["initContainerStatuses"]
    }
    assert exits.get("export") == 78, exits
