"""The `helm test` Pod's command, run for real: the exact command the chart renders, against a
real `lbtrain webhook` (the CLI the chart's Deployment runs) on the testbed's API server, over
HTTP and over TLS. Only the address and the secret file's path differ from the Pod's: here the
webhook listens on 127.0.0.1 and the secret is a local file instead of the mounted Secret."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed.pki import write_pki

from .helpers import REPO, Render, find

pytestmark = pytest.mark.testbed

SECRET = "helm-test-secret-3c9e1f-DO-NOT-LEAK"
TLS = {"webhook.tls.enabled": True, "webhook.tls.secretName": "pod-tls"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Webhook:
    """`lbtrain webhook` as a process, serving `namespace`; stopped with SIGTERM."""

    def __init__(
        self, plane: ControlPlane, namespace: str, secret_file: Path, tls: Path | None
    ) -> None:
        self.port = free_port()
        args = [
            sys.executable, "-m", "lbtrain", "webhook", f"--namespace={namespace}",
            f"--kubeconfig={plane.kubeconfig}", "--host=127.0.0.1", f"--port={self.port}",
            f"--metrics-port={free_port()}", f"--secret-file={secret_file}",
        ]  # fmt: skip
        if tls is not None:
            args += [f"--tls-cert={tls / 'apiserver.crt'}", f"--tls-key={tls / 'apiserver.key'}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_up(self) -> None:
        """Until the port accepts connections (readiness itself is the script's to wait for)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError("the webhook did not listen within 30 s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def start_webhook(control_plane: ControlPlane, tmp_path: Path, crds: None) -> Iterator[Any]:
    started: list[Webhook] = []
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n")

    def start(namespace: str, *, tls: bool) -> Webhook:
        pki = None
        if tls:
            pki = tmp_path / "pki"
            write_pki(pki)
        hook = Webhook(control_plane, namespace, secret_file, pki)
        started.append(hook)
        hook.wait_up()
        return hook

    yield start
    for hook in started:
        hook.stop()


def pod_command(render: Render, values: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    [pod] = find(render(values), "Pod")
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    return list(container["command"]), env


def run_test_pod(
    render: Render, values: dict[str, Any], port: int, secret_file: Path, timeout: int = 30
) -> subprocess.CompletedProcess[str]:
    """The Pod's command and environment, pointed at 127.0.0.1:`port` and a local secret file."""
    command, env = pod_command(render, values)
    url = urlsplit(env["LBTRAIN_WEBHOOK_URL"])
    env["LBTRAIN_WEBHOOK_URL"] = url._replace(netloc=f"127.0.0.1:{port}").geturl()
    env["LBTRAIN_SECRET_FILE"] = str(secret_file)
    env["LBTRAIN_TEST_TIMEOUT"] = str(timeout)
    return subprocess.run(
        command,
        env={"PATH": os.environ["PATH"], "NO_PROXY": "127.0.0.1", **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def seed_templates(kubectl, namespace: str) -> None:
    for name in ("ner", "bounding-box"):
        path = REPO / "examples" / "templates" / f"{name}.yaml"
        result = kubectl("apply", "-n", namespace, "-f", str(path))
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_the_helm_test_pod_passes_against_a_real_webhook(
    render: Render, kubectl, namespace: str, start_webhook, tmp_path: Path, tls: bool
) -> None:
    seed_templates(kubectl, namespace)
    hook = start_webhook(namespace, tls=tls)
    result = run_test_pod(render, TLS if tls else {}, hook.port, tmp_path / "webhook-secret")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: an unsigned GET /models is refused (401)" in result.stdout
    assert "ok: a signed GET /models lists bounding_box, ner" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_the_rendered_scheme_is_what_the_webhook_serves(
    render: Render, kubectl, namespace: str, start_webhook, tmp_path: Path
) -> None:
    """A Pod rendered for HTTP cannot pass against a webhook serving TLS: the scheme matters."""
    seed_templates(kubectl, namespace)
    hook = start_webhook(namespace, tls=True)
    secret_file = tmp_path / "webhook-secret"
    result = run_test_pod(render, {}, hook.port, secret_file, timeout=3)
    assert result.returncode != 0
    assert "FAIL: cannot reach the webhook at http://127.0.0.1:" in result.stderr


def test_a_wrong_secret_fails_and_says_so(
    render: Render, kubectl, namespace: str, start_webhook, tmp_path: Path
) -> None:
    seed_templates(kubectl, namespace)
    hook = start_webhook(namespace, tls=False)
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not-the-secret\n")
    result = run_test_pod(render, {}, hook.port, wrong)
    assert result.returncode == 1
    assert "got 401: the webhook reads another secret" in result.stdout
    assert "not-the-secret" not in result.stdout + result.stderr


def test_no_template_fails_and_says_so(
    render: Render, namespace: str, start_webhook, tmp_path: Path
) -> None:
    hook = start_webhook(namespace, tls=False)
    result = run_test_pod(render, {}, hook.port, tmp_path / "webhook-secret")
    assert result.returncode == 1
    assert "lists no model type" in result.stdout
    assert "Create a TrainingTemplate" in result.stdout


def test_an_unreachable_webhook_fails_and_says_so(render: Render, tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET)
    command, env = pod_command(render, {})
    env |= {
        "LBTRAIN_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}",
        "LBTRAIN_SECRET_FILE": str(secret_file),
        "LBTRAIN_TEST_TIMEOUT": "3",
    }
    started = time.monotonic()
    result = subprocess.run(
        command, env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "FAIL: cannot reach the webhook at http://127.0.0.1:" in result.stderr
    assert "waiting for the webhook" in result.stdout, "it retries until the deadline"
    assert time.monotonic() - started < 30
