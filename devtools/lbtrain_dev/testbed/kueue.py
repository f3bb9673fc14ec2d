"""Kueue on the testbed's real node: install it as its users do, and take it away without a trace.

lbtrain's training Jobs must queue through Kueue on shared GPU clusters, so the testbed runs a
real one: the manager built from its Go module and packed into an image by
testbed/build-kueue.sh, installed with the Helm chart that ships in the same module, into the
namespace `kueue-system` under the release name `kueue` (the names its internal certificate
manager expects). Only the `batch/job` integration is on, the manager asks for little CPU (the
node has 2), and certificates are Kueue's own (no cert-manager). The visibility API (pending
workloads and their positions) is served through the API server's aggregation layer, which the
testbed's API server has when it runs a node.

`install` is idempotent (a `helm upgrade --install`) and returns only once Kueue's webhooks
answer: a server-side dry run of a queue-labelled Job comes back suspended by Kueue's mutating
webhook. `uninstall` first deletes every Kueue object while the manager can still remove its
finalizers (a CRD whose objects keep a finalizer never goes away), then the release and the
namespace, and checks that nothing is left: a leftover fail-closed webhook configuration would
refuse every later Job in the cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from lbtrain_dev.source import run_build_script
from lbtrain_dev.testbed import node as nodeio
from lbtrain_dev.testbed.controlplane import ControlPlane

NAMESPACE = "kueue-system"
RELEASE = "kueue"  # the chart's names (kueue-webhook-service, ...) follow it; Kueue expects them
GROUP = "kueue.x-k8s.io"
VISIBILITY_GROUP = "visibility.kueue.x-k8s.io"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
FRAMEWORKS = ("batch/job",)
# Requests small enough for the 2-CPU node; the chart's limits stay.
RESOURCES = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}
# Kueue's objects, the ones holding others (and finalizers) last: deleted in this order.
KINDS = (
    "workloads",
    "localqueues",
    "clusterqueues",
    "cohorts",
    "resourceflavors",
    "admissionchecks",
    "workloadpriorityclasses",
    "topologies",
    "provisioningrequestconfigs",
    "multikueueconfigs",
    "multikueueclusters",
)
NAMESPACED_KINDS = frozenset({"workloads", "localqueues"})

WEBHOOK_PROBE_JOB = "lbtrain-kueue-webhook-probe"
NOT_SUSPENDED = "Kueue's mutating webhook did not suspend a queue-labelled Job (dry run)"


class KueueError(RuntimeError):
    """Kueue did not install, answer or go away; says which step and why."""


@dataclass(frozen=True)
class KueueBuild:
    """What testbed/build-kueue.sh made: the image (a docker-archive and its name) and the
    chart of the same release."""

    folder: Path

    @property
    def archive(self) -> Path:
        return self.folder / "image.tar"

    @property
    def image(self) -> str:
        return (self.folder / "image.ref").read_text().strip()

    @property
    def chart(self) -> Path:
        return self.folder / "chart"


def ensure_kueue_build(*, quiet: bool = False) -> KueueBuild:
    """Kueue's image and chart; built on first use (the manager: minutes), then from the cache.

    ``LBTRAIN_TESTBED_KUEUE`` names a ready build folder and skips the script.
    """
    override = os.environ.get("LBTRAIN_TESTBED_KUEUE")
    folder = Path(override or run_build_script("testbed/build-kueue.sh", quiet=quiet).strip())
    build = KueueBuild(folder.resolve())
    for need in (build.archive, build.folder / "image.ref", build.chart / "Chart.yaml"):
        if not need.is_file():
            raise FileNotFoundError(f"Kueue build folder {build.folder} lacks {need.name}")
    return build


# --- decisions (pure) --------------------------------------------------------------------------
def manager_config(chart_default: str, frameworks: tuple[str, ...] = FRAMEWORKS) -> str:
    """The chart's default manager configuration with only `frameworks` integrated.

    The chart takes the configuration as one YAML string, so changing one field means passing
    all of it: starting from the chart's own default keeps every other upstream setting.
    """
    config = yaml.safe_load(chart_default)
    config.setdefault("integrations", {})["frameworks"] = list(frameworks)
    return str(yaml.safe_dump(config, sort_keys=False))


def chart_values(image: str, config: str, *, visibility: bool = True) -> dict[str, Any]:
    """Helm values: the locally built image (never pulled), small requests, `config`, and the
    VisibilityOnDemand feature turned off when the API server cannot aggregate."""
    repository, _, tag = image.rpartition(":")
    gates = [] if visibility else [{"name": "VisibilityOnDemand", "enabled": False}]
    return {
        "controllerManager": {
            "featureGates": gates,
            "manager": {
                "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
                "resources": RESOURCES,
            },
        },
        "managerConfig": {"controllerManagerConfigYaml": config},
    }


def build_values(build: KueueBuild, *, visibility: bool = True) -> dict[str, Any]:
    """The values `install` gives the chart of `build` (its default configuration, narrowed)."""
    values = yaml.safe_load((build.chart / "values.yaml").read_text())
    default = values["managerConfig"]["controllerManagerConfigYaml"]
    return chart_values(build.image, manager_config(default), visibility=visibility)


def probe_job() -> dict[str, Any]:
    """A queue-labelled Job for a server-side dry run: Kueue's webhook must suspend it."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": WEBHOOK_PROBE_JOB, "labels": {QUEUE_LABEL: "lbtrain-probe"}},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "probe", "image": "127.0.0.1:1/never-pulled"}],
                }
            }
        },
    }


def leftovers_in(found: dict[str, list[dict[str, Any]]]) -> list[str]:
    """What of Kueue is still in the cluster, from listings by resource (`kubectl get -o json`
    items): its CRDs, webhook configurations (any that call a Service in its namespace),
    APIServices, cluster roles and bindings, and its namespace."""
    left: list[str] = []
    for crd in found.get("customresourcedefinitions", []):
        if str(crd.get("spec", {}).get("group", "")).endswith(GROUP):
            left.append(f"customresourcedefinition/{crd['metadata']['name']}")
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        for config in found.get(kind, []):
            services = [
                (hook.get("clientConfig") or {}).get("service") or {}
                for hook in config.get("webhooks") or []
            ]
            if config["metadata"]["name"].startswith(f"{RELEASE}-") or any(
                svc.get("namespace") == NAMESPACE for svc in services
            ):
                left.append(f"{kind[:-1]}/{config['metadata']['name']}")
    for service in found.get("apiservices", []):
        if service.get("spec", {}).get("group") == VISIBILITY_GROUP:
            left.append(f"apiservice/{service['metadata']['name']}")
    for kind in ("clusterroles", "clusterrolebindings"):
        for item in found.get(kind, []):
            labels = item["metadata"].get("labels") or {}
            if labels.get("app.kubernetes.io/instance") == RELEASE or item["metadata"][
                "name"
            ].startswith(f"{RELEASE}-"):
                left.append(f"{kind[:-1]}/{item['metadata']['name']}")
    for ns in found.get("namespaces", []):
        if ns["metadata"]["name"] == NAMESPACE:
            left.append(f"namespace/{NAMESPACE}")
    return left


# --- I/O ---------------------------------------------------------------------------------------
def helm(plane: ControlPlane, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The testbed's helm against the plane, with its own config and cache under the run folder."""
    home = plane.run_dir / "helm-kueue"
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    return subprocess.run(
        [str(plane.bin_dir / "helm"), *args, f"--kubeconfig={plane.kubeconfig}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def install(
    plane: ControlPlane, build: KueueBuild, *, visibility: bool = True, timeout: float = 300
) -> None:
    """Import Kueue's image into the node, install (or upgrade) the chart, and wait until the
    manager is ready, its webhooks answer and (with `visibility`) its visibility API is
    Available."""
    if not plane.state.node:
        raise KueueError("Kueue runs as a pod: the testbed needs a real node (up --node)")
    nodeio.import_image(plane.node_paths, build.archive, build.image)
    values = build_values(build, visibility=visibility)
    values_file = plane.run_dir / "kueue-values.yaml"
    values_file.write_text(yaml.safe_dump(values, sort_keys=False))
    done = helm(
        plane, "upgrade", "--install", RELEASE, str(build.chart),
        f"--namespace={NAMESPACE}", "--create-namespace", f"--values={values_file}",
        "--wait=watcher", f"--timeout={int(timeout)}s",
        timeout=timeout + 60,
    )  # fmt: skip
    if done.returncode != 0:
        raise KueueError(
            f"helm install of Kueue failed: {done.stderr.strip()}\n{_manager_log(plane)}"
        )
    deadline = time.monotonic() + timeout
    _wait(deadline, "Kueue's webhooks to answer", lambda: _webhooks_answer(plane), plane)
    if visibility:
        for version in ("v1beta2", "v1beta1"):
            name = f"{version}.{VISIBILITY_GROUP}"
            _wait(deadline, f"APIService {name} Available", partial(_available, plane, name), plane)


def uninstall(plane: ControlPlane, *, timeout: float = 300) -> None:
    """Delete every Kueue object (while the manager still runs and removes its finalizers), the
    release, and the namespace; raise if anything of Kueue is left. Safe when nothing is
    installed."""
    deadline = time.monotonic() + timeout
    served = _served_kinds(plane)
    for kind in KINDS:
        if kind not in served:
            continue
        scope = ["--all-namespaces"] if kind in NAMESPACED_KINDS else []
        plane.kubectl(
            "delete", f"{kind}.{GROUP}", "--all", *scope, "--ignore-not-found", "--wait=false",
            timeout=60,
        )  # fmt: skip
        _wait(deadline, f"every {kind} deleted", partial(_none_left, plane, kind), plane)
    done = helm(
        plane, "uninstall", RELEASE, f"--namespace={NAMESPACE}", "--ignore-not-found",
        "--wait=watcher", f"--timeout={int(timeout)}s",
        timeout=timeout + 60,
    )  # fmt: skip
    if done.returncode != 0:
        raise KueueError(f"helm uninstall of Kueue failed: {done.stderr.strip()}")
    plane.kubectl(
        "delete", "namespace", NAMESPACE, "--ignore-not-found", f"--timeout={int(timeout)}s",
        timeout=timeout + 30,
    )  # fmt: skip
    left = leftovers(plane)
    if left:
        raise KueueError(f"Kueue's uninstall left behind: {', '.join(left)}")


def leftovers(plane: ControlPlane) -> list[str]:
    """What of Kueue the cluster still holds (empty after a clean uninstall)."""
    kinds = (
        "customresourcedefinitions", "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations", "apiservices", "clusterroles",
        "clusterrolebindings", "namespaces",
    )  # fmt: skip
    return leftovers_in({kind: _list(plane, kind) for kind in kinds})


def _list(plane: ControlPlane, resource: str) -> list[dict[str, Any]]:
    done = plane.kubectl("get", resource, "-o", "json", check=True)
    return list(json.loads(done.stdout).get("items", []))


def _served_kinds(plane: ControlPlane) -> set[str]:
    done = plane.kubectl("api-resources", f"--api-group={GROUP}", "-o", "name", timeout=60)
    return {line.split(".", 1)[0] for line in done.stdout.split()}


def _names(plane: ControlPlane, kind: str) -> list[str]:
    scope = ["--all-namespaces"] if kind in NAMESPACED_KINDS else []
    done = plane.kubectl("get", f"{kind}.{GROUP}", *scope, "-o", "name", timeout=60)
    return done.stdout.split() if done.returncode == 0 else []


def _none_left(plane: ControlPlane, kind: str) -> bool:
    return not _names(plane, kind)


def _webhooks_answer(plane: ControlPlane) -> bool:
    done = plane.kubectl(
        "create", "--dry-run=server", "-o", "json", "--namespace=default", "-f", "-",
        input=json.dumps(probe_job()),
    )  # fmt: skip
    if done.returncode != 0:
        return False
    if json.loads(done.stdout).get("spec", {}).get("suspend") is not True:
        raise KueueError(NOT_SUSPENDED)
    return True


def _available(plane: ControlPlane, apiservice: str) -> bool:
    done = plane.kubectl("get", "apiservice", apiservice, "-o", "json")
    if done.returncode != 0:
        return False
    conditions = json.loads(done.stdout).get("status", {}).get("conditions") or []
    return any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)


def _manager_log(plane: ControlPlane) -> str:
    done = plane.kubectl(
        "logs", f"--namespace={NAMESPACE}", f"deployment/{RELEASE}-controller-manager",
        "--tail=30",
    )  # fmt: skip
    return f"--- Kueue manager's log ---\n{done.stdout or done.stderr}"


def _wait(deadline: float, what: str, ready: Callable[[], bool], plane: ControlPlane) -> None:
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(1)
    raise KueueError(f"timed out waiting for {what}\n{_manager_log(plane)}")
