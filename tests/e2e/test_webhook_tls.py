"""In-pod TLS on a real node: the webhook serves the certificate of a kubernetes.io/tls Secret, and
when the Secret is renewed (as cert-manager renews it) the running pod serves the new one, with
no restart; `helm test` passes over HTTPS.

The chart is installed with `webhook.tls.enabled` and `webhook.tls.secretName` and one webhook
replica (its default templates are what `helm test` lists; nothing is trained here). The certificate is checked from this
machine, which routes to the pods' addresses on the node's bridge: the served certificate's serial
number is compared with the Secret's. The kubelet updates a mounted Secret on its sync loop
(`syncFrequency`: 10 s on the testbed) by an atomic swap of the folder; the webhook polls the files
(webhook/lbtrain_webhook/tls.py) and swaps its context.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.images import ImageSet
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed import nodeconfig as nc
from lbtrain_dev.testbed.pki import write_pki

from ..helm.helpers import CHART, Helm, set_args
from .helpers import imported_image_values

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

NS = "lbtrain-tls"
RELEASE = "lbtrain"
TLS_SECRET = "webhook-tls"
API_KEY = "lb-api-key-tls"
WEBHOOK_PORT = 8080


def new_pair(folder: Path) -> tuple[Path, Path, int]:
    """A fresh serving certificate and key (a CA of their own), and the certificate's serial."""
    write_pki(folder)
    cert = folder / "apiserver.crt"
    return (
        cert,
        folder / "apiserver.key",
        x509.load_pem_x509_certificate(cert.read_bytes()).serial_number,
    )


def tls_secret(cert: Path, key: Path) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": TLS_SECRET, "namespace": NS},
            "stringData": {"tls.crt": cert.read_text(), "tls.key": key.read_text()},
        }
    )


def served_serial(address: str, port: int) -> int:
    """The serial of the certificate the server at address:port presents (not verified: only
    which certificate it is matters here)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((address, port), timeout=5) as raw,
        ctx.wrap_socket(raw) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture(scope="module")
def labelbox() -> Iterator[FakeLabelbox]:
    with FakeLabelbox.in_thread(api_key=API_KEY, host=nc.node_ip()) as fake:
        yield fake


@pytest.fixture(scope="module")
def first_serial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    return new_pair(tmp_path_factory.mktemp("pair-1"))


@pytest.fixture(scope="module")
def helm(real_node: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(real_node.bin_dir / "helm", tmp_path_factory.mktemp("helm"), real_node.kubeconfig)


@pytest.fixture(scope="module")
def installed(
    real_node: ControlPlane,
    images: ImageSet,
    labelbox: FakeLabelbox,
    helm: Helm,
    first_serial: tuple[Path, Path, int],
) -> Iterator[ControlPlane]:
    kubectl = real_node.kubectl
    kubectl("create", "namespace", NS, check=True)
    cert, key, _ = first_serial
    kubectl("apply", "-f", "-", input=tls_secret(cert, key), check=True)
    values: dict[str, Any] = {
        **imported_image_values(images),
        "labelbox.endpoint": labelbox.endpoint,
        "labelbox.restEndpoint": labelbox.rest_endpoint,
        "labelbox.apiKey": API_KEY,
        "webhook.tls.enabled": True,
        "webhook.tls.secretName": TLS_SECRET,
        "webhook.replicas": 1,
        "webhook.pdb.enabled": False,
    }
    result = helm(
        "install", RELEASE, str(CHART), f"--namespace={NS}", "--wait", "--timeout=100s",
        *set_args(values), check=False,
    )  # fmt: skip
    if result.returncode != 0:
        print(kubectl("describe", "pods", "-n", NS).stdout[-6000:])
    assert result.returncode == 0, result.stderr
    yield real_node
    helm("uninstall", RELEASE, f"--namespace={NS}", "--wait", check=False)
    kubectl("delete", "namespace", NS, "--wait=false")


def webhook_pod(plane: ControlPlane) -> dict[str, Any]:
    done = plane.kubectl(
        "get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=webhook", "-o", "json",
        check=True,
    )  # fmt: skip
    [pod] = json.loads(done.stdout)["items"]
    return dict(pod)


def test_helm_test_passes_over_https(installed: ControlPlane, helm: Helm) -> None:
    """The chart's test Pod reaches the webhook's Service by name over HTTPS: a signed
    GET /models lists the default templates' model types, an unsigned one is refused."""
    tested = helm("test", RELEASE, f"--namespace={NS}", "--timeout=100s", check=False)
    if tested.returncode != 0:
        print(installed.kubectl("logs", f"{RELEASE}-test-models", "-n", NS).stdout[-3000:])
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert re.search(r"Phase:\s+Succeeded", tested.stdout), tested.stdout


def test_a_renewed_secret_is_served_without_a_restart(
    installed: ControlPlane,
    first_serial: tuple[Path, Path, int],
    tmp_path: Path,
) -> None:
    before = webhook_pod(installed)
    address = before["status"]["podIP"]
    assert served_serial(address, WEBHOOK_PORT) == first_serial[2]

    cert, key, renewed = new_pair(tmp_path / "pair-2")
    installed.kubectl("apply", "-f", "-", input=tls_secret(cert, key), check=True)
    started = time.monotonic()
    serial = first_serial[2]
    while serial != renewed and time.monotonic() - started < 120:
        time.sleep(1)
        serial = served_serial(address, WEBHOOK_PORT)
    print(f"the renewed certificate was served {time.monotonic() - started:.1f}s after the update")
    assert serial == renewed, "the webhook still serves the first certificate after 120 s"

    after = webhook_pod(installed)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]  # the same pod
    [status] = after["status"]["containerStatuses"]
    assert status["restartCount"] == 0  # and the same container
