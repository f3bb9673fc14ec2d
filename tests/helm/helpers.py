"""Helpers for the Helm chart tests (a module of its own: conftest is not importable)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed.binaries import repo_root

REPO = repo_root()
CHART = REPO / "deploy" / "helm" / "lbtrain"
CRDS_CHART = REPO / "deploy" / "helm" / "lbtrain-crds"
# The version both images are tagged with by default (`make push` tags them so).
APP_VERSION: str = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
KUBE_VERSION = "1.35.4"
# The values the chart cannot default, set wherever the chart is rendered or installed: the
# Labelbox API key and the registry the images were pushed to (a closed port on loopback:
# nothing is ever pulled from it).
API_KEY = "lb-api-key-for-helm-tests"
IMAGE_REGISTRY = "127.0.0.1:1/ml"
REQUIRED_VALUES: dict[str, Any] = {"labelbox.apiKey": API_KEY, "imageRegistry": IMAGE_REGISTRY}


def required_values(*, api_key: bool = True) -> dict[str, Any]:
    """REQUIRED_VALUES, without the API key when a test gives labelbox.existingSecret instead."""
    return {k: v for k, v in REQUIRED_VALUES.items() if api_key or k != "labelbox.apiKey"}


# The chart's extension points at once (extraObjects through tpl, NetworkPolicy extras, TLS and
# an Ingress): a value set both the render checks and the server-side dry run go through.
EXTENSION_VALUES: dict[str, Any] = {
    "webhook.ingress.enabled": True,
    "webhook.ingress.host": "lbtrain.example.com",
    "webhook.tls.enabled": True,
    "webhook.tls.secretName": "lbtrain-pod-tls",
    "networkPolicy.extraEgress": [
        {"to": [{"ipBlock": {"cidr": "10.20.0.5/32"}}], "ports": [{"port": 3128}]}
    ],
    "networkPolicy.extraIngress": [{"from": [{"podSelector": {}}]}],
    "extraObjects": [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "{{ .Release.Name }}-extra",
                "namespace": "{{ .Release.Namespace }}",
                "labels": {"app.kubernetes.io/part-of": "lbtrain"},
            },
            "data": {"registry": "{{ .Values.imageRegistry }}"},
        }
    ],
}


class Helm:
    """The helm binary with private config/cache folders (nothing of the user's is read)."""

    def __init__(self, binary: Path, home: Path, kubeconfig: Path | None = None) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.env = {
            **os.environ,
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
            "NO_PROXY": "127.0.0.1,localhost",
        }
        if kubeconfig is None:  # offline: never reach whatever cluster the environment names
            self.env["KUBECONFIG"] = str(home / "no-cluster")

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.binary), *args]
        if self.kubeconfig is not None:
            cmd.append(f"--kubeconfig={self.kubeconfig}")
        result = subprocess.run(
            cmd, capture_output=True, text=True, env=self.env, timeout=120, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result


Render = Callable[..., list[dict[str, Any]]]


def set_args(values: dict[str, Any]) -> list[str]:
    """--set-json flags for `values` (a flat {dotted.key: value} dict); JSON keeps types exact."""
    return [f"--set-json={key}={json.dumps(value)}" for key, value in values.items()]


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def notes(helm: Helm, values: dict[str, Any]) -> str:
    """The install notes for `values` (plus the required values), release `lbtrain` in `ml`."""
    result = helm(
        "install",
        "lbtrain",
        str(CHART),
        "--namespace=ml",
        "--dry-run=client",
        *set_args(REQUIRED_VALUES | values),
    )
    text: str = result.stdout.split("NOTES:", 1)[1]
    return text


# --- cluster ----------------------------------------------------------------------------------


class Releases:
    """Helm releases a test installs; whatever is still installed at the end is uninstalled."""

    def __init__(self, helm: Helm) -> None:
        self.helm = helm
        self.installed: list[tuple[str, str]] = []

    def install(
        self,
        release: str,
        namespace: str,
        values: dict[str, Any] | None = None,
        *,
        chart: Path = CHART,
        extra: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        vals = required_values() if chart == CHART else {}
        vals.update(values or {})
        # No --wait: there is no kubelet, so Deployments never become ready (helm 4 waits for
        # hooks only by default, and the chart has none).
        result = self.helm(
            "install", release, str(chart), f"--namespace={namespace}", *set_args(vals), *extra
        )
        self.installed.append((release, namespace))
        return result

    def upgrade(
        self,
        release: str,
        namespace: str,
        values: dict[str, Any],
        *,
        chart: Path = CHART,
        extra: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        return self.helm(
            "upgrade",
            release,
            str(chart),
            f"--namespace={namespace}",
            "--reset-then-reuse-values",
            *set_args(values),
            *extra,
        )

    def uninstall(self, release: str, namespace: str) -> subprocess.CompletedProcess[str]:
        result = self.helm("uninstall", release, f"--namespace={namespace}")
        self.installed.remove((release, namespace))
        return result

    def cleanup(self) -> None:
        for release, namespace in list(self.installed):
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.uninstall(release, namespace)


def can_i(kubectl, sa: str, namespace: str, verb: str, resource: str, where: str | None) -> bool:
    """`kubectl auth can-i` as the ServiceAccount `sa` of `namespace`, in `where` (None: all)."""
    scope = ["--all-namespaces"] if where is None else [f"--namespace={where}"]
    result = kubectl(
        "auth", "can-i", verb, resource, f"--as=system:serviceaccount:{namespace}:{sa}", *scope
    )
    answer: str = result.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {verb} {resource}: {result.stdout} {result.stderr}"
    return answer == "yes"


def sa_kubeconfig(kubectl, plane: ControlPlane, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig that authenticates as ServiceAccount `sa` with a TokenRequest token."""
    result = kubectl("create", "token", sa, f"--namespace={namespace}", "--duration=1h")
    assert result.returncode == 0, result.stderr
    admin = yaml.safe_load(plane.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testbed", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": result.stdout.strip()}}],
        "contexts": [
            {
                "name": sa,
                "context": {"cluster": "testbed", "user": sa, "namespace": namespace},
            }
        ],
        "current-context": sa,
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path
