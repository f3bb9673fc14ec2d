"""The chart in the testbed: helm install (no --wait: there is no kubelet), every object there,
server-side validation, the RBAC matrix through `kubectl auth can-i`, upgrade, uninstall.

CRDs and the shared session cluster: the chart ships the CRDs in its crds/ folder, which Helm
creates when absent and leaves alone when present, never upgrades and never deletes. So these
tests work whether the session's `crds` fixture (kubectl server-side apply of the same files) ran
before them or runs after (identical content: no field conflicts), and uninstalling a release
never removes the CRDs other tests rely on. The optional lbtrain-crds chart takes ownership of
the live CRDs with --take-ownership and keeps them on uninstall (helm.sh/resource-policy: keep);
its test checks exactly that and leaves the CRDs' spec as it found it.
"""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import yaml

from .helpers import (
    API_KEY,
    CHART,
    CRDS_CHART,
    EXTENSION_VALUES,
    KUBE_VERSION,
    REQUIRED_VALUES,
    Helm,
    Releases,
    can_i,
    documents,
    set_args,
)

pytestmark = pytest.mark.testbed

CRD_NAMES = ("modelruns.lbtrain.io", "trainingtemplates.lbtrain.io")
INSTANCE = "app.kubernetes.io/instance"


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


def get_json(kubectl, *args: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ok(kubectl("get", *args, "-o", "json")))
    return doc


def crds_established(kubectl) -> None:
    ok(
        kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *(f"crd/{name}" for name in CRD_NAMES),
        )
    )


def manifest(helm: Helm, release: str, namespace: str) -> list[dict[str, Any]]:
    return documents(helm("get", "manifest", release, f"--namespace={namespace}").stdout)


def secret_value(kubectl, name: str, namespace: str, key: str) -> str:
    data = get_json(kubectl, "secret", name, "-n", namespace)["data"]
    return base64.b64decode(data[key]).decode()


def left_behind(kubectl, release: str, namespaces: list[str]) -> list[str]:
    """Objects of `release` still in the cluster (by the instance label), not being deleted.

    (The testbed runs no pvc-protection controller, so a deleted claim keeps its finalizer and
    a deletionTimestamp: deleted as far as Helm and the user are concerned.)"""
    kinds = (
        "deployments,services,serviceaccounts,secrets,roles,rolebindings,networkpolicies,"
        "poddisruptionbudgets,ingresses,persistentvolumeclaims,trainingtemplates"
    )
    selector = f"{INSTANCE}={release}"
    items = []
    for ns in namespaces:
        items += get_json(kubectl, kinds, "-n", ns, "-l", selector)["items"]
    items += get_json(kubectl, "clusterroles,clusterrolebindings", "-l", selector)["items"]
    return [
        "/".join(
            filter(None, (i["metadata"].get("namespace"), i["kind"].lower(), i["metadata"]["name"]))
        )
        for i in items
        if not i["metadata"].get("deletionTimestamp")
    ]


async def test_install_upgrade_uninstall(
    namespace: str, extra_namespace: str, kubectl, releases: Releases, cluster_helm: Helm
) -> None:
    # The shared artifacts claim (off by default; each run gets its own claim otherwise) is
    # what a release keeps after uninstall.
    result = releases.install(
        "lbtrain", namespace, {"artifacts.persistentVolumeClaim.create": True}
    )
    assert "Models > Settings > Model training" in result.stdout, "NOTES are shown"
    crds_established(kubectl)
    status = json.loads(
        cluster_helm("status", "lbtrain", f"--namespace={namespace}", "-o", "json").stdout
    )
    assert status["info"]["status"] == "deployed"

    # Every object of the release exists in the cluster.
    docs = manifest(cluster_helm, "lbtrain", namespace)
    kinds = {d["kind"] for d in docs}
    assert {
        "Deployment",
        "Service",
        "ServiceAccount",
        "Secret",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "TrainingTemplate",
    } <= kinds
    listed = ok(kubectl("get", "-f", "-", "-o", "name", input=yaml.safe_dump_all(docs)))
    assert len(listed.split()) == len(docs)
    tts = get_json(kubectl, "trainingtemplates", "-n", namespace)["items"]
    assert len(tts) == 6
    operator = get_json(kubectl, "deployment", "lbtrain-operator", "-n", namespace)
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"]["type"] == "Recreate"
    webhook_secret = secret_value(kubectl, "lbtrain-webhook-secret", namespace, "secret")
    assert len(webhook_secret) == 40
    assert secret_value(kubectl, "lbtrain-labelbox", namespace, "api-key") == API_KEY
    checksum = operator["spec"]["template"]["metadata"]["annotations"]["checksum/labelbox-api-key"]

    # Upgrade with changed values.
    result = releases.upgrade(
        "lbtrain",
        namespace,
        {
            "webhook.replicas": 1,
            "trainingTemplates.templates.ner.enabled": False,
            "trainingTemplates.templates.bounding-box.gpus": 2,
            "operator.watchNamespaces": [extra_namespace],
            "labelbox.apiKey": "rotated-key",
        },
    )
    assert "Helm never upgrades CRDs" in result.stdout
    webhook = get_json(kubectl, "deployment", "lbtrain-webhook", "-n", namespace)
    assert webhook["spec"]["replicas"] == 1
    names = {t["metadata"]["name"] for t in get_json(kubectl, "tt", "-n", namespace)["items"]}
    assert "ner" not in names and len(names) == 5
    box = get_json(kubectl, "tt", "bounding-box", "-n", namespace)
    assert box["spec"]["gpus"] == 2
    # The generated webhook secret survives the upgrade (Labelbox still has it).
    assert secret_value(kubectl, "lbtrain-webhook-secret", namespace, "secret") == webhook_secret
    # The new key reaches both namespaces, and the operator restarts to read it.
    for ns in (namespace, extra_namespace):
        assert secret_value(kubectl, "lbtrain-labelbox", ns, "api-key") == "rotated-key"
    get_json(kubectl, "role", "lbtrain-operator", "-n", extra_namespace)
    operator = get_json(kubectl, "deployment", "lbtrain-operator", "-n", namespace)
    template = operator["spec"]["template"]
    assert template["metadata"]["annotations"]["checksum/labelbox-api-key"] != checksum
    assert f"--namespace={extra_namespace}" in template["spec"]["containers"][0]["args"]
    assert can_i(kubectl, "lbtrain-operator", namespace, "create", "jobs.batch", extra_namespace)
    # The watched namespace got what a run there needs: the templates and the artifacts claim.
    extra = {t["metadata"]["name"] for t in get_json(kubectl, "tt", "-n", extra_namespace)["items"]}
    assert extra == names
    get_json(kubectl, "pvc", "lbtrain-artifacts", "-n", extra_namespace)

    # Uninstall: only what is kept on purpose stays.
    releases.uninstall("lbtrain", namespace)
    remaining = left_behind(kubectl, "lbtrain", [namespace, extra_namespace])
    assert sorted(remaining) == sorted(
        [
            f"{namespace}/secret/lbtrain-webhook-secret",  # what Labelbox was given
            *(
                f"{ns}/persistentvolumeclaim/lbtrain-artifacts"
                for ns in (namespace, extra_namespace)
            ),
        ]
    ), remaining
    pvc = get_json(kubectl, "pvc", "lbtrain-artifacts", "-n", namespace)
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    crds_established(kubectl)  # the CRDs stay too
    assert not can_i(
        kubectl, "lbtrain-operator", namespace, "list", "modelruns.lbtrain.io", namespace
    )


async def test_nothing_kept_when_nothing_asked(namespace: str, kubectl, releases: Releases) -> None:
    releases.install(
        "lbtrain",
        namespace,
        {"artifacts.persistentVolumeClaim.keep": False, "webhook.secret.keep": False},
    )
    releases.uninstall("lbtrain", namespace)
    assert left_behind(kubectl, "lbtrain", [namespace]) == []
    crds_established(kubectl)


DRY_RUN_VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cluster-wide": {"operator.clusterWide": True},
    "existing-secrets": {
        "labelbox.apiKey": "",
        "labelbox.existingSecret": "mine",
        "webhook.secret.existingSecret": "mine-too",
    },
    "ingress-tls": {
        "webhook.ingress.enabled": True,
        "webhook.ingress.host": "lbtrain.example.com",
        "webhook.ingress.tls": [{"secretName": "t", "hosts": ["lbtrain.example.com"]}],
        "webhook.tls.enabled": True,
        "webhook.tls.secretName": "pod-tls",
    },
    "extensions": EXTENSION_VALUES,
    "templates-off": {"trainingTemplates.enabled": False},
    "minimal": {
        "rbac.create": False,
        "networkPolicy.enabled": False,
        "webhook.pdb.enabled": False,
        "operator.clusterScan": False,
    },
}


@pytest.mark.parametrize("variant", sorted(DRY_RUN_VARIANTS))
async def test_server_side_dry_run(
    namespace: str, kubectl, cluster_helm: Helm, crds: None, variant: str
) -> None:
    """The API server accepts every object with strict field validation, including the
    TrainingTemplates against the installed CRD's schema; and Pod Security admission finds the
    pods restricted."""
    ok(
        kubectl(
            "label",
            "namespace",
            namespace,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        )
    )
    values = REQUIRED_VALUES | DRY_RUN_VARIANTS[variant]
    rendered = cluster_helm(
        "template",
        "lbtrain",
        str(CHART),
        f"--namespace={namespace}",
        f"--kube-version={KUBE_VERSION}",
        "--include-crds",
        *set_args(values),
    ).stdout
    docs = documents(rendered)
    crd_docs = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    others = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    assert len(crd_docs) == 2
    # The chart's CRDs apply cleanly over the live ones (the same files), then the rest.
    ok(
        kubectl(
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            "-",
            input=yaml.safe_dump_all(crd_docs),
        )
    )
    result = kubectl(
        "create",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        input=yaml.safe_dump_all(others),
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == len(others)
    # Workloads that break the restricted profile draw "would violate PodSecurity" warnings.
    assert "PodSecurity" not in result.stderr, result.stderr


# --- RBAC ----------------------------------------------------------------------------------

# (verb, resource, scope, allowed): scope "ns" = the release namespace, "other" = another
# namespace, "cluster" = every namespace / cluster-scoped.
WEBHOOK_MATRIX = [
    ("create", "modelruns.lbtrain.io", "ns", True),
    ("get", "modelruns.lbtrain.io", "ns", True),
    ("get", "trainingtemplates.lbtrain.io", "ns", True),
    ("list", "trainingtemplates.lbtrain.io", "ns", True),
    ("watch", "trainingtemplates.lbtrain.io", "ns", True),
    ("delete", "modelruns.lbtrain.io", "ns", False),
    ("update", "modelruns.lbtrain.io", "ns", False),
    ("patch", "modelruns.lbtrain.io", "ns", False),
    ("list", "modelruns.lbtrain.io", "ns", False),
    ("patch", "modelruns.lbtrain.io/status", "ns", False),
    ("create", "trainingtemplates.lbtrain.io", "ns", False),
    ("delete", "trainingtemplates.lbtrain.io", "ns", False),
    ("get", "secrets", "ns", False),
    ("list", "secrets", "ns", False),
    ("get", "configmaps", "ns", False),
    ("create", "jobs.batch", "ns", False),
    ("create", "pods", "ns", False),
    ("create", "modelruns.lbtrain.io", "other", False),
    ("list", "trainingtemplates.lbtrain.io", "other", False),
    ("list", "namespaces", "cluster", False),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", "cluster", False),
]

OPERATOR_MATRIX = [
    *(
        (verb, "modelruns.lbtrain.io", "ns", True)
        for verb in ("get", "list", "watch", "patch", "update")
    ),
    *((verb, "modelruns.lbtrain.io/status", "ns", True) for verb in ("get", "patch", "update")),
    *((verb, "trainingtemplates.lbtrain.io", "ns", True) for verb in ("get", "list", "watch")),
    *(
        (verb, "jobs.batch", "ns", True)
        for verb in ("get", "list", "watch", "create", "patch", "delete")
    ),
    *((verb, "pods", "ns", True) for verb in ("get", "list", "watch")),
    ("create", "events", "ns", True),
    ("patch", "events", "ns", True),
    ("list", "events", "ns", True),  # a starting pod's FailedMount Events
    ("create", "persistentvolumeclaims", "ns", True),  # each run's artifacts claim
    ("get", "persistentvolumeclaims", "ns", True),
    ("create", "services", "ns", True),  # a multi-pod run's headless Service
    ("get", "services", "ns", True),
    ("create", "events.events.k8s.io", "ns", True),
    ("create", "leases.coordination.k8s.io", "ns", True),
    ("list", "leases.coordination.k8s.io", "ns", True),
    ("watch", "leases.coordination.k8s.io", "ns", True),
    ("get", "leases.coordination.k8s.io/lbtrain-operator-heartbeat", "ns", True),
    ("patch", "leases.coordination.k8s.io/lbtrain-operator-heartbeat", "ns", True),
    ("update", "leases.coordination.k8s.io/lbtrain-operator-heartbeat", "ns", True),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", "cluster", True),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", "cluster", True),
    ("list", "namespaces", "cluster", True),
    ("watch", "namespaces", "cluster", True),
    # ... and nothing beyond.
    ("get", "secrets", "ns", False),
    ("list", "secrets", "ns", False),
    ("get", "secrets", "cluster", False),
    ("create", "pods", "ns", False),
    ("delete", "pods", "ns", False),
    ("create", "pods/exec", "ns", False),
    ("create", "modelruns.lbtrain.io", "ns", False),
    ("delete", "modelruns.lbtrain.io", "ns", False),
    ("create", "trainingtemplates.lbtrain.io", "ns", False),
    ("update", "trainingtemplates.lbtrain.io", "ns", False),
    ("delete", "trainingtemplates.lbtrain.io", "ns", False),
    ("update", "jobs.batch", "ns", False),
    ("delete", "persistentvolumeclaims", "ns", False),
    ("update", "persistentvolumeclaims", "ns", False),
    ("delete", "services", "ns", False),
    ("create", "persistentvolumes", "cluster", False),
    ("patch", "leases.coordination.k8s.io/some-other-lease", "ns", False),
    ("delete", "leases.coordination.k8s.io/lbtrain-operator-heartbeat", "ns", False),
    ("create", "serviceaccounts/token", "ns", False),
    ("create", "rolebindings.rbac.authorization.k8s.io", "ns", False),
    ("update", "customresourcedefinitions.apiextensions.k8s.io", "cluster", False),
    ("get", "namespaces", "cluster", False),
    ("list", "modelruns.lbtrain.io", "other", False),
    ("create", "jobs.batch", "other", False),
    ("list", "modelruns.lbtrain.io", "cluster", False),
]

CLUSTER_WIDE_OPERATOR_MATRIX = [
    ("list", "modelruns.lbtrain.io", "other", True),
    ("list", "modelruns.lbtrain.io", "cluster", True),
    ("patch", "modelruns.lbtrain.io/status", "other", True),
    ("create", "jobs.batch", "other", True),
    ("delete", "jobs.batch", "other", True),
    ("watch", "pods", "cluster", True),
    ("create", "events", "other", True),
    ("list", "leases.coordination.k8s.io", "cluster", True),
    ("create", "leases.coordination.k8s.io", "ns", True),
    ("patch", "leases.coordination.k8s.io/lbtrain-operator-heartbeat", "ns", True),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", "cluster", True),
    # Cluster-wide mode needs no namespace listing (kopf watches every namespace at once).
    ("list", "namespaces", "cluster", False),
    ("create", "leases.coordination.k8s.io", "other", False),
    ("patch", "leases.coordination.k8s.io/lbtrain-operator-heartbeat", "other", False),
    ("get", "secrets", "other", False),
    ("get", "secrets", "cluster", False),
    ("create", "pods", "other", False),
    ("delete", "modelruns.lbtrain.io", "other", False),
    ("create", "trainingtemplates.lbtrain.io", "other", False),
]


def check_matrix(
    kubectl, sa: str, namespace: str, other: str, matrix: list[tuple[str, str, str, bool]]
) -> None:
    where = {"ns": namespace, "other": other, "cluster": None}

    def check(row: tuple[str, str, str, bool]) -> str | None:
        verb, resource, scope, allowed = row
        if can_i(kubectl, sa, namespace, verb, resource, where[scope]) == allowed:
            return None
        return f"{sa} {'can' if not allowed else 'cannot'} {verb} {resource} ({scope})"

    with ThreadPoolExecutor(max_workers=4) as pool:
        wrong = [w for w in pool.map(check, matrix) if w]
    assert not wrong, "\n".join(wrong)


async def test_rbac_matrix(
    namespace: str, extra_namespace: str, kubectl, releases: Releases, cluster_helm: Helm
) -> None:
    releases.install("lbtrain", namespace)
    check_matrix(kubectl, "lbtrain-webhook", namespace, extra_namespace, WEBHOOK_MATRIX)
    check_matrix(kubectl, "lbtrain-operator", namespace, extra_namespace, OPERATOR_MATRIX)
    # Nobody else got anything: the namespace's default ServiceAccount is as bare as before.
    assert not can_i(kubectl, "default", namespace, "get", "modelruns.lbtrain.io", namespace)
    # No rule anywhere in the release uses a wildcard.
    for doc in manifest(cluster_helm, "lbtrain", namespace):
        if doc["kind"] in ("Role", "ClusterRole"):
            flat = json.dumps(doc["rules"])
            assert '"*"' not in flat, doc["metadata"]["name"]


async def test_rbac_matrix_cluster_wide(
    namespace: str, extra_namespace: str, kubectl, releases: Releases
) -> None:
    releases.install("lbtrain", namespace, {"operator.clusterWide": True})
    check_matrix(
        kubectl, "lbtrain-operator", namespace, extra_namespace, CLUSTER_WIDE_OPERATOR_MATRIX
    )
    # The webhook stays in its namespace.
    check_matrix(kubectl, "lbtrain-webhook", namespace, extra_namespace, WEBHOOK_MATRIX)


# --- the optional CRD chart ----------------------------------------------------------------


async def test_crds_chart_takes_ownership_and_keeps_them(
    namespace: str, kubectl, releases: Releases, crds: None
) -> None:
    """The CRDs exist (the session's `crds` fixture, as an admin's kubectl would leave them):
    the chart adopts them with --take-ownership, which is how a cluster moves to it. (A fresh
    install by this chart cannot be tested without deleting the CRDs the session shares.)"""
    before = {name: get_json(kubectl, "crd", name)["spec"] for name in CRD_NAMES}
    releases.install("lbtrain-crds", namespace, chart=CRDS_CHART, extra=("--take-ownership",))
    crds_established(kubectl)
    for name in CRD_NAMES:
        crd = get_json(kubectl, "crd", name)
        meta = crd["metadata"]
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
        assert meta["annotations"]["meta.helm.sh/release-name"] == "lbtrain-crds"
        assert meta["labels"][INSTANCE] == "lbtrain-crds"
        assert crd["spec"] == before[name], "the chart's CRDs are the repository's"
    # The main chart installs beside it: it finds the CRDs present and leaves them be.
    releases.install("lbtrain", namespace, {"trainingTemplates.enabled": False})
    releases.uninstall("lbtrain", namespace)
    releases.uninstall("lbtrain-crds", namespace)
    crds_established(kubectl)
    for name in CRD_NAMES:
        assert get_json(kubectl, "crd", name)["spec"] == before[name]
