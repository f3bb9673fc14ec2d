"""The chart's promise, end to end: after `helm install`, a signed POST /model_run becomes a
ModelRun, then a Job, then COMPLETE in Labelbox.

The webhook and the operator run from the source tree with exactly the command lines of the
chart's Deployments (file paths and ports swapped for local ones) and as the chart's
ServiceAccounts: tokens from the TokenRequest API, so the chart's RBAC is all they have. The fake
kubelet drives the trainer pod; a fake Labelbox answers the operator.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lbtrain.kube import JOBS, LEASES, MODELRUNS, KubeClient
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed.controlplane import free_port
from lbtrain_dev.testbed.fake_kubelet import FakeKubelet

from .helpers import (
    API_KEY,
    APP_VERSION,
    IMAGE_REGISTRY,
    Helm,
    Releases,
    documents,
    one,
    sa_kubeconfig,
)

pytestmark = pytest.mark.testbed

RUN_ID = fake_cuid("helm-e2e-0001")
MODEL_TYPES = {
    "bounding_box",
    "ner",
    "image_single_classification",
    "image_multi_classification",
    "text_single_classification",
    "text_multi_classification",
}
# Words a component logs when RBAC refuses it something.
# What an RBAC refusal leaves in a log: the API server's reason (Forbidden) or its message
# ("... is forbidden: User ... cannot ..."), or kopf's own words. Not a bare "403": text logs
# carry milliseconds, and ",403" in a timestamp is not a refusal.
REFUSALS = ("Forbidden", "forbidden", "Not enough permissions")


class Program:
    """One of the chart's containers, run locally: its args, with local paths and ports."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"}
        env.pop("KUBECONFIG", None)
        env.pop("LABELBOX_API_KEY", None)  # the key comes from the mounted file, as in the pod
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lbtrain", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def container_args(docs: list[dict[str, Any]], deployment: str) -> list[str]:
    pod = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]
    args: list[str] = pod["containers"][0]["args"]
    return args


def localize(args: list[str], replace: dict[str, str], extra: list[str]) -> list[str]:
    """Swap flags by name (`--flag=value`); every flag to swap must be in the chart's args."""
    seen = set()
    out = []
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in replace:
            seen.add(flag)
            out.append(f"{flag}={replace[flag]}")
        else:
            out.append(arg)
    assert seen == set(replace), f"the chart's args lack {set(replace) - seen}: {args}"
    return out + extra


def secret_data(kubectl, name: str, namespace: str, key: str) -> str:
    result = kubectl("get", "secret", name, "-n", namespace, "-o", "json")
    assert result.returncode == 0, result.stderr
    return base64.b64decode(json.loads(result.stdout)["data"][key]).decode()


def sign(secret: str, body: bytes) -> str:
    return "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


async def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{url} not ready after {timeout}s")
            await asyncio.sleep(0.3)


async def wait_job(kube: KubeClient, namespace: str, run: str, timeout: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        jobs = await kube.list(JOBS, namespace, label_selector=f"lbtrain.io/model-run={run}")
        if jobs["items"]:
            [job] = jobs["items"]
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no Job for ModelRun {run} after {timeout}s")
        await asyncio.sleep(0.2)


async def heartbeat_seen(port: int) -> None:
    """/healthz stays green past three heartbeat intervals (1 s here) only when the operator
    sees its own Lease renewals through its watch: writes and watch both allowed."""
    await wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
    await asyncio.sleep(4)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as resp,
    ):
        assert resp.status == 200, await resp.text()


@pytest.fixture
def fake_labelbox() -> Iterator[FakeLabelbox]:
    with FakeLabelbox.in_thread(api_key=API_KEY) as fake:
        yield fake


async def test_signed_post_trains_a_model_with_the_charts_service_accounts(
    namespace: str,
    kube: KubeClient,
    kubectl,
    control_plane: ControlPlane,
    cluster_helm: Helm,
    releases: Releases,
    fake_labelbox: FakeLabelbox,
    tmp_path: Path,
) -> None:
    releases.install(
        "lbtrain",
        namespace,
        {
            "labelbox.endpoint": fake_labelbox.endpoint,
            "labelbox.restEndpoint": fake_labelbox.rest_endpoint,
            # Faster loops for a test; also proves extraArgs reach the operator.
            "operator.extraArgs": [
                "--resync-interval=2",
                "--heartbeat-interval=1",
                "--report-backoff-max=1",
                "--log-format=text",
            ],
        },
    )
    result = kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/modelruns.lbtrain.io",
        "crd/trainingtemplates.lbtrain.io",
    )
    assert result.returncode == 0, result.stderr
    docs = documents(cluster_helm("get", "manifest", "lbtrain", f"--namespace={namespace}").stdout)

    # What the kubelet would mount from the chart's Secrets.
    secret = secret_data(kubectl, "lbtrain-webhook-secret", namespace, "secret")
    (tmp_path / "webhook-secret").write_text(secret)
    (tmp_path / "api-key").write_text(
        secret_data(kubectl, "lbtrain-labelbox", namespace, "api-key")
    )
    webhook_kc = sa_kubeconfig(
        kubectl, control_plane, namespace, "lbtrain-webhook", tmp_path / "webhook.kubeconfig"
    )
    operator_kc = sa_kubeconfig(
        kubectl, control_plane, namespace, "lbtrain-operator", tmp_path / "operator.kubeconfig"
    )

    port, liveness = free_port(), free_port()
    webhook = Program(
        localize(
            container_args(docs, "lbtrain-webhook"),
            {
                "--port": str(port),
                "--metrics-port": "0",
                "--secret-file": str(tmp_path / "webhook-secret"),
            },
            [f"--kubeconfig={webhook_kc}", "--host=127.0.0.1"],
        ),
        tmp_path / "webhook.log",
    )
    operator = Program(
        localize(
            container_args(docs, "lbtrain-operator"),
            {
                "--metrics-port": "0",
                "--liveness-port": str(liveness),
                "--labelbox-api-key-file": str(tmp_path / "api-key"),
            },
            [f"--kubeconfig={operator_kc}"],
        ),
        tmp_path / "operator.log",
    )
    assert operator.args[0] == "operator" and f"--namespace={namespace}" in operator.args
    assert "--api-key-secret=lbtrain-labelbox" in operator.args
    fake_labelbox.add_model_run(RUN_ID)
    webhook.start()
    operator.start()
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(f"{base}/readyz")
        async with aiohttp.ClientSession() as session:
            # GET /models: the chart's six templates, read through the webhook's RBAC.
            headers = {"X-Hub-Signature": sign(secret, b"")}
            async with session.get(f"{base}/models", headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                assert set(await resp.json()) == MODEL_TYPES
            body = json.dumps(
                {
                    "modelRunId": RUN_ID,
                    "modelType": "image_single_classification",
                    "modelId": fake_cuid("model1"),
                    "organizationId": fake_cuid("org1"),
                }
            ).encode()
            headers = {"X-Hub-Signature": sign(secret, body), "Content-Type": "application/json"}
            async with session.post(f"{base}/model_run", data=body, headers=headers) as resp:
                assert resp.status == 201, await resp.text()
            # A repeated delivery finds the ModelRun (the webhook's `get`) and succeeds again.
            async with session.post(f"{base}/model_run", data=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
            # A wrong signature is refused.
            headers["X-Hub-Signature"] = sign("not-the-secret", body)
            async with session.post(f"{base}/model_run", data=body, headers=headers) as resp:
                assert resp.status == 401

        [run] = [
            mr
            for mr in (await kube.list(MODELRUNS, namespace))["items"]
            if mr["spec"]["modelRunId"] == RUN_ID
        ]
        name = run["metadata"]["name"]
        assert run["spec"]["modelType"] == "image_single_classification"

        # The operator, with the chart's RBAC, makes the Job from the chart's template.
        job = await wait_job(kube, namespace, name)
        assert job["metadata"]["ownerReferences"][0]["name"] == name
        pod_spec = job["spec"]["template"]["spec"]
        train = pod_spec["containers"][0]
        assert train["image"] == f"{IMAGE_REGISTRY}/lbtrain-trainer:{APP_VERSION}"
        api_key_env = next(e for e in train["env"] if e["name"] == "LABELBOX_API_KEY")
        assert api_key_env["valueFrom"]["secretKeyRef"] == {
            "name": "lbtrain-labelbox",
            "key": "api-key",
        }
        env = {e["name"]: e.get("value") for e in train["env"]}
        assert env["LABELBOX_ENDPOINT"] == fake_labelbox.endpoint

        # The fake kubelet runs the pod to success; Labelbox hears the whole story.
        kubelet = FakeKubelet(kube, namespace)
        [pod] = await kubelet.wait_for_pods(f"lbtrain.io/model-run={name}", timeout=60)
        await kubelet.schedule(pod)
        for stage in ("export", "prepare", "train"):
            await kubelet.run_stage(pod, stage)
        await kubelet.succeed(pod, message=json.dumps({"accuracy": 0.9}))
        done = await kube.wait_for(
            MODELRUNS,
            name,
            namespace,
            lambda mr: (
                (mr.get("status") or {}).get("labelbox", {}).get("acknowledged") == "COMPLETE"
            ),
            timeout=60,
        )
        assert done["status"]["phase"] == "Succeeded"
        assert fake_labelbox.statuses(RUN_ID)[-1] == "COMPLETE"

        # Liveness works under the chart's RBAC: the heartbeat Lease is written and seen.
        lease = await kube.get(LEASES, "lbtrain-operator-heartbeat", namespace)
        assert lease["spec"]["holderIdentity"] == "lbtrain-operator"
        await heartbeat_seen(liveness)
    finally:
        webhook.stop()
        operator.stop()
        print("---- webhook log (tail) ----\n" + webhook.output()[-4000:])
        print("---- operator log (tail) ----\n" + operator.output()[-6000:])
    for program in (webhook, operator):
        refused = [
            line for line in program.output().splitlines() if any(w in line for w in REFUSALS)
        ]
        assert not refused, f"{program.args[0]} was refused by RBAC:\n" + "\n".join(refused)


async def test_cluster_wide_operator_starts_with_the_charts_rbac(
    namespace: str,
    kube: KubeClient,
    kubectl,
    control_plane: ControlPlane,
    cluster_helm: Helm,
    releases: Releases,
    fake_labelbox: FakeLabelbox,
    tmp_path: Path,
) -> None:
    """Cluster-wide, kopf watches every namespace: its ClusterRole must cover the heartbeat
    Lease watch and the CRD scan, or /healthz never turns green."""
    releases.install(
        "lbtrain",
        namespace,
        {
            "operator.clusterWide": True,
            "labelbox.endpoint": fake_labelbox.endpoint,
            "labelbox.restEndpoint": fake_labelbox.rest_endpoint,
            "operator.extraArgs": ["--heartbeat-interval=1", "--log-format=text"],
        },
    )
    docs = documents(cluster_helm("get", "manifest", "lbtrain", f"--namespace={namespace}").stdout)
    (tmp_path / "api-key").write_text(API_KEY)
    kc = sa_kubeconfig(
        kubectl, control_plane, namespace, "lbtrain-operator", tmp_path / "operator.kubeconfig"
    )
    liveness = free_port()
    operator = Program(
        localize(
            container_args(docs, "lbtrain-operator"),
            {
                "--metrics-port": "0",
                "--liveness-port": str(liveness),
                "--labelbox-api-key-file": str(tmp_path / "api-key"),
            },
            [f"--kubeconfig={kc}"],
        ),
        tmp_path / "operator.log",
    )
    assert "--all-namespaces" in operator.args
    operator.start()
    try:
        await heartbeat_seen(liveness)
        lease = await kube.get(LEASES, "lbtrain-operator-heartbeat", namespace)
        assert lease["spec"]["holderIdentity"] == "lbtrain-operator"
    finally:
        operator.stop()
        print("---- operator log (tail) ----\n" + operator.output()[-6000:])
    refused = [line for line in operator.output().splitlines() if any(w in line for w in REFUSALS)]
    assert not refused, "the operator was refused by RBAC:\n" + "\n".join(refused)
