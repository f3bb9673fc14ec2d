"""The chart, offline: lint, render over several value sets, validate against Kubernetes 1.35
schemas (and the TrainingTemplate CRD's own schema), and check what each object must say."""

from __future__ import annotations

import copy
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
import pytest
import yaml

import lbtrain

from .helpers import (
    API_KEY,
    APP_VERSION,
    CHART,
    CRDS_CHART,
    EXTENSION_VALUES,
    IMAGE_REGISTRY,
    REPO,
    REQUIRED_VALUES,
    Helm,
    Render,
    documents,
    find,
    notes,
    one,
)
from .helpers import set_args as set_flags

IMAGE_RE = re.compile(
    r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)+"
    r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[a-f0-9]{64})?$"
)
CLUSTER_SCOPED = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Namespace"}
DIGEST = "sha256:" + "ab" * 32

# Value sets rendered and validated; each is a realistic configuration.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cluster-wide": {"operator.clusterWide": True},
    "watch-namespaces": {"operator.watchNamespaces": ["team-a", "team-b"]},
    "existing-secrets": {
        "labelbox.existingSecret": "my-labelbox",
        "webhook.secret.existingSecret": "my-webhook",
        "webhook.secret.existingSecretKey": "token",
    },
    "ingress-tls": {
        "webhook.ingress.enabled": True,
        "webhook.ingress.host": "lbtrain.example.com",
        "webhook.ingress.className": "nginx",
        "webhook.ingress.annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
        "webhook.ingress.tls": [{"secretName": "lbtrain-tls", "hosts": ["lbtrain.example.com"]}],
        "webhook.tls.enabled": True,
        "webhook.tls.secretName": "lbtrain-pod-tls",
    },
    "extensions": EXTENSION_VALUES,
    "templates-off": {
        "trainingTemplates.enabled": False,
        "artifacts.persistentVolumeClaim.create": False,
    },
    "service-monitor": {
        "metrics.serviceMonitor.enabled": True,
        "metrics.serviceMonitor.labels": {"release": "prometheus"},
        "networkPolicy.metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
    },
    "minimal": {
        "rbac.create": False,
        "networkPolicy.enabled": False,
        "webhook.pdb.enabled": False,
        "webhook.serviceAccount.create": False,
        "webhook.serviceAccount.name": "my-webhook-sa",
        "operator.serviceAccount.create": False,
        "operator.serviceAccount.name": "my-operator-sa",
        "operator.clusterScan": False,
        "operator.metricsPort": 0,
        "webhook.metricsPort": 0,
    },
    "load-balancer-pinned": {
        "webhook.service.type": "LoadBalancer",
        "webhook.service.loadBalancerSourceRanges": ["35.223.142.181/32"],
        "webhook.replicas": 3,
        "webhook.pdb.minAvailable": 2,
        "image.digest": DIGEST,
        "image.tag": "0.1.0-rc.1",
        "imagePullSecrets": [{"name": "ghcr"}],
        "labelbox.endpoint": "https://api.eu.labelbox.com/graphql",
        "networkPolicy.apiServerCidrs": ["10.0.0.1/32"],
        "networkPolicy.labelboxCidrs": ["34.0.0.0/8"],
        "trainingTemplates.defaults.gpus": 2,
        "trainingTemplates.defaults.nodeSelector": {"gpu": "a100"},
    },
}


def strict(schema: Any) -> Any:
    """The CRD schema, with unknown fields rejected where the API server would prune them."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in schema
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_schema(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((REPO / "crds" / f"{name}.lbtrain.io.yaml").read_text())
    schema: dict[str, Any] = strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    # metadata is checked by the API server, not by the CRD schema.
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


TT_SCHEMA = crd_schema("trainingtemplates")


def validate_all(docs: list[dict[str, Any]], namespace: str = "lbtrain") -> None:
    assert docs, "nothing rendered"
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if doc["apiVersion"].startswith("lbtrain.io/"):
            assert kind == "TrainingTemplate"
            jsonschema.validate(doc, TT_SCHEMA)
        elif doc["apiVersion"].startswith("monitoring.coreos.com/"):
            assert kind == "ServiceMonitor"
            assert doc["spec"]["endpoints"] and doc["spec"]["selector"]["matchLabels"]
        else:
            try:
                kubernetes_validate.validate(doc, "1.35", strict=True)
            except kubernetes_validate.ValidationError as exc:  # pragma: no cover - on failure
                pytest.fail(f"{kind}/{name} is invalid for Kubernetes 1.35: {exc.message}")
        if kind in CLUSTER_SCOPED:
            assert "namespace" not in doc["metadata"], f"{kind}/{name}"
        else:
            assert doc["metadata"].get("namespace"), f"{kind}/{name} has no explicit namespace"
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "lbtrain", f"{kind}/{name}"


def rbac_has_no_wildcard(docs: list[dict[str, Any]]) -> None:
    for doc in find(docs, "Role") + find(docs, "ClusterRole"):
        for rule in doc["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), f"{doc['kind']}/{doc['metadata']['name']}"
            assert "secrets" not in rule["resources"], "no component reads Secrets"
            if "pods" in rule["resources"]:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}


def pods_are_restricted(docs: list[dict[str, Any]]) -> None:
    deployments = find(docs, "Deployment")
    assert len(deployments) == 2
    for dep in deployments:
        pod = dep["spec"]["template"]["spec"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for vol in pod["volumes"]:
            assert "hostPath" not in vol
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["runAsNonRoot"] is True
            assert sc["privileged"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert IMAGE_RE.match(c["image"]), c["image"]
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
            # A read-only root needs a writable /tmp.
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])


def args_of(docs: list[dict[str, Any]], component: str) -> list[str]:
    dep = one(docs, "Deployment", f"lbtrain-{component}")
    args: list[str] = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


# --- lint and validation -------------------------------------------------------------------


def test_lint_strict(helm: Helm) -> None:
    result = helm("lint", "--strict", str(CHART), *set_flags(REQUIRED_VALUES))
    assert "0 chart(s) failed" in result.stdout
    result = helm("lint", "--strict", str(CRDS_CHART))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_renders_valid_kubernetes_1_35(render: Render, variant: str) -> None:
    values = VARIANTS[variant]
    docs = render(values, api_key="labelbox.existingSecret" not in values)
    validate_all(docs)
    rbac_has_no_wildcard(docs)
    pods_are_restricted(docs)
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "an object is rendered twice"


def test_crds_folder_is_the_repository_crds(helm: Helm) -> None:
    """The chart's crds/ is the repository's crds/ (a link), so the chart never forks them."""
    link = CHART / "crds"
    assert link.is_symlink() and link.resolve() == (REPO / "crds").resolve()
    shown = documents(helm("show", "crds", str(CHART)).stdout)
    expected = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml"))]
    key = lambda d: d["metadata"]["name"]  # noqa: E731
    assert sorted(shown, key=key) == sorted(expected, key=key)
    assert {d["metadata"]["name"] for d in shown} == {
        "modelruns.lbtrain.io",
        "trainingtemplates.lbtrain.io",
    }


def test_crds_chart_renders_the_repository_crds_with_keep(render: Render) -> None:
    expected = {
        d["metadata"]["name"]: d
        for d in (yaml.safe_load(p.read_text()) for p in (REPO / "crds").glob("*.yaml"))
    }
    docs = render(chart=CRDS_CHART, release="lbtrain-crds")
    assert {d["metadata"]["name"] for d in docs} == set(expected)
    for doc in docs:
        want = expected[doc["metadata"]["name"]]
        assert doc["spec"] == want["spec"], "the chart changed a CRD's spec"
        assert doc["apiVersion"] == want["apiVersion"] and doc["kind"] == want["kind"]
        assert doc["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert want["metadata"]["labels"].items() <= doc["metadata"]["labels"].items()
    for doc in render({"keep": False}, chart=CRDS_CHART, release="lbtrain-crds"):
        assert "helm.sh/resource-policy" not in doc["metadata"].get("annotations", {})


def test_versions_agree() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    crds_chart = yaml.safe_load((CRDS_CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == crds_chart["appVersion"] == lbtrain.__version__


# --- what the objects say ------------------------------------------------------------------


def test_defaults(render: Render) -> None:
    docs = render()
    operator = one(docs, "Deployment", "lbtrain-operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    pod = operator["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "lbtrain-operator"
    assert pod["containers"][0]["image"] == f"{IMAGE_REGISTRY}/lbtrain:{APP_VERSION}"
    assert args_of(docs, "operator") == [
        "operator",
        "--namespace=lbtrain",
        "--labelbox-endpoint=https://api.labelbox.com/graphql",
        "--labelbox-rest-endpoint=https://api.labelbox.com/api/v1",
        "--labelbox-api-key-file=/etc/lbtrain/labelbox/api-key",
        "--api-key-secret=lbtrain-labelbox",
        "--metrics-port=9090",
        "--liveness-port=8081",
        "--progress-port=8082",
        "--progress-url=http://lbtrain-operator-progress.lbtrain.svc:8082/progress",
        "--progress-interval=5",
        "--log-level=INFO",
        "--log-format=json",
    ]
    probe = pod["containers"][0]["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "healthz"}
    assert {"name": "healthz", "containerPort": 8081, "protocol": "TCP"} in pod["containers"][0][
        "ports"
    ]
    assert pod["volumes"][0]["secret"]["secretName"] == "lbtrain-labelbox"

    webhook = one(docs, "Deployment", "lbtrain-webhook")
    assert webhook["spec"]["replicas"] == 2
    wpod = webhook["spec"]["template"]["spec"]
    assert wpod["serviceAccountName"] == "lbtrain-webhook"
    assert args_of(docs, "webhook") == [
        "webhook",
        "--namespace=lbtrain",
        "--port=8080",
        "--metrics-port=9090",
        "--secret-file=/etc/lbtrain/webhook/secret",
        "--max-body-bytes=65536",
        "--log-level=INFO",
    ]
    container = wpod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The secret is mounted as a folder (no subPath), so a rotated secret reaches the pod.
    mount = next(m for m in container["volumeMounts"] if m["name"] == "webhook-secret")
    assert "subPath" not in mount and mount["mountPath"] == "/etc/lbtrain/webhook"

    service = one(docs, "Service", "lbtrain-webhook")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0] == {
        "name": "http",
        "port": 80,
        "targetPort": "http",
        "protocol": "TCP",
        "appProtocol": "http",
    }
    webhook_secret = one(docs, "Secret", "lbtrain-webhook-secret")
    assert len(webhook_secret["data"]["secret"]) > 40, "a generated secret"
    labelbox = one(docs, "Secret", "lbtrain-labelbox")
    assert set(labelbox["data"]) == {"api-key"}
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert not find(docs, "Ingress") and not find(docs, "ServiceMonitor")
    assert {d["metadata"]["name"] for d in find(docs, "ServiceAccount")} == {
        "lbtrain-webhook",
        "lbtrain-operator",
    }
    # Each run gets its own artifacts claim from the operator; the shared one is off.
    assert not find(docs, "PersistentVolumeClaim")


def test_default_templates_are_the_examples(render: Render) -> None:
    """The six default TrainingTemplates say what examples/templates say (plus CRD defaults)."""
    tts = {d["metadata"]["name"]: d for d in find(render(), "TrainingTemplate")}
    examples = {
        d["metadata"]["name"]: d
        for d in (
            yaml.safe_load(p.read_text()) for p in (REPO / "examples" / "templates").glob("*.yaml")
        )
    }
    assert set(tts) == set(examples) and len(tts) == 6
    assert {t["spec"]["modelType"] for t in tts.values()} == {
        "bounding_box",
        "ner",
        "image_single_classification",
        "image_multi_classification",
        "text_single_classification",
        "text_multi_classification",
    }
    crd_defaults = {
        "imagePullPolicy": "IfNotPresent",
        "gpuResourceName": "nvidia.com/gpu",
        "volumeGracePeriodSeconds": 600,
        "shmSizeLimit": "2Gi",
    }
    # Storage is where they differ: the examples mount one shared claim, the chart gives each
    # run its own (test_every_run_gets_its_own_claim_by_default).
    storage = ("artifacts", "volumes", "volumeMounts")
    for name, example in examples.items():
        spec = dict(tts[name]["spec"])
        for key, value in crd_defaults.items():
            assert spec.pop(key) == value
        want = copy.deepcopy(example["spec"])
        want["image"] = f"{IMAGE_REGISTRY}/lbtrain-trainer:{APP_VERSION}"
        for key in storage:
            spec.pop(key, None)
            want.pop(key, None)
        assert spec == want, name


def test_every_run_gets_its_own_claim_by_default(render: Render) -> None:
    for tt in find(render(), "TrainingTemplate"):
        spec = tt["spec"]
        assert spec["artifacts"] == {
            "destination": "/artifacts/{modelRunId}",
            "volumeClaimTemplate": {
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "100Gi"}},
                }
            },
            "retention": "Delete",
            "mountPath": "/artifacts",
        }, tt["metadata"]["name"]
        assert "volumes" not in spec and "volumeMounts" not in spec
        assert spec["volumeGracePeriodSeconds"] == 600 and spec["shmSizeLimit"] == "2Gi"
        jsonschema.validate(tt, TT_SCHEMA)
    docs = render(
        {
            "artifacts.perRunClaim.size": "500Gi",
            "artifacts.perRunClaim.storageClassName": "fast-ssd",
            "artifacts.perRunClaim.accessModes": ["ReadWriteOncePod"],
            "artifacts.perRunClaim.retention": "Retain",
            "trainingTemplates.defaults.volumeGracePeriodSeconds": 120,
            "trainingTemplates.templates.ner.shmSizeLimit": "16Gi",
        }
    )
    tts = {d["metadata"]["name"]: d["spec"] for d in find(docs, "TrainingTemplate")}
    artifacts = tts["bounding-box"]["artifacts"]
    assert artifacts["volumeClaimTemplate"]["spec"] == {
        "accessModes": ["ReadWriteOncePod"],
        "storageClassName": "fast-ssd",
        "resources": {"requests": {"storage": "500Gi"}},
    }
    assert artifacts["retention"] == "Retain"
    assert tts["bounding-box"]["volumeGracePeriodSeconds"] == 120
    assert (tts["ner"]["shmSizeLimit"], tts["bounding-box"]["shmSizeLimit"]) == ("16Gi", "2Gi")


def test_a_shared_claim_replaces_the_per_run_claims(render: Render) -> None:
    docs = render({"artifacts.persistentVolumeClaim.create": True})
    pvc = one(docs, "PersistentVolumeClaim", "lbtrain-artifacts")
    assert pvc["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "runs on several nodes share it"
    for tt in find(docs, "TrainingTemplate"):
        spec = tt["spec"]
        assert spec["artifacts"] == {"destination": "/artifacts/{modelRunId}"}
        assert spec["volumes"] == [
            {"name": "artifacts", "persistentVolumeClaim": {"claimName": "lbtrain-artifacts"}}
        ]
        assert spec["volumeMounts"] == [{"name": "artifacts", "mountPath": "/artifacts"}]


def test_without_any_claim_weights_stay_in_the_workspace_or_an_object_store(
    render: Render,
) -> None:
    docs = render({"artifacts.perRunClaim.enabled": False})
    assert not find(docs, "PersistentVolumeClaim")
    for tt in find(docs, "TrainingTemplate"):
        # No destination: the operator's default, /workspace/artifacts/{modelRunId}.
        assert "artifacts" not in tt["spec"] and "volumes" not in tt["spec"]
    docs = render(
        {
            "artifacts.perRunClaim.enabled": False,
            "artifacts.destination": "s3://models/{modelRunId}",
        }
    )
    for tt in find(docs, "TrainingTemplate"):
        assert tt["spec"]["artifacts"] == {"destination": "s3://models/{modelRunId}"}


def test_templates_switched_off_replaced_and_added(render: Render) -> None:
    assert not find(render({"trainingTemplates.enabled": False}), "TrainingTemplate")
    docs = render(
        {
            "trainingTemplates.templates.ner.enabled": False,
            "trainingTemplates.templates.bounding-box.gpus": 4,
            "trainingTemplates.templates.bounding-box.nodeSelector": {"gpu": "h100"},
            "trainingTemplates.templates.bounding-box.activeDeadlineSeconds": 3600,
            "trainingTemplates.templates.bounding-box.image": {
                "repository": "127.0.0.1:1/team/lbtrain-trainer",
                "tag": "2024.1",
                "digest": DIGEST,
            },
            "trainingTemplates.templates.yolo": {
                "modelType": "Yolo_v8",
                "description": "custom detector",
                "tolerations": [],
                "spec": {"command": ["python", "-m", "yolo"], "labelbox": {"endpoint": "x"}},
            },
            "trainingTemplates.defaults.tolerations": [
                {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "artifacts.persistentVolumeClaim.existingClaim": "team-models",
        }
    )
    tts = {d["metadata"]["name"]: d["spec"] for d in find(docs, "TrainingTemplate")}
    assert "ner" not in tts and len(tts) == 6
    box = tts["bounding-box"]
    assert box["gpus"] == 4 and box["nodeSelector"] == {"gpu": "h100"}
    assert box["activeDeadlineSeconds"] == 3600
    assert box["image"] == f"127.0.0.1:1/team/lbtrain-trainer:2024.1@{DIGEST}"
    assert box["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert box["volumes"] == [
        {"name": "artifacts", "persistentVolumeClaim": {"claimName": "team-models"}}
    ]
    yolo = tts["yolo"]
    assert yolo["modelType"] == "Yolo_v8" and "tolerations" not in yolo
    assert yolo["command"] == ["python", "-m", "yolo"] and yolo["labelbox"] == {"endpoint": "x"}
    assert yolo["gpus"] == 1 and yolo["backoffLimit"] == 2, "defaults still apply"
    assert "nodeSelector" not in yolo, "no node label is needed by default"
    assert not find(docs, "PersistentVolumeClaim"), "an existing claim is not created"
    for doc in find(docs, "TrainingTemplate"):
        jsonschema.validate(doc, TT_SCHEMA)


def test_a_second_model_for_one_task_as_the_readme_shows(render: Render) -> None:
    docs = render(
        {
            "trainingTemplates.templates.ner-fast": {
                "modelType": "Named entities - fast",
                "description": "a small model",
                "hyperparameters": {"model_size": "small"},
                "spec": {"task": "ner"},
            }
        }
    )
    tts = {d["metadata"]["name"]: d for d in find(docs, "TrainingTemplate")}
    fast = tts["ner-fast"]["spec"]
    assert (fast["modelType"], fast["task"]) == ("Named entities - fast", "ner")
    assert fast["hyperparameters"]["model_size"] == "small"
    assert tts["ner"]["spec"]["modelType"] == "ner"  # the default stays listed beside it
    jsonschema.validate(tts["ner-fast"], TT_SCHEMA)


def test_cluster_wide(render: Render) -> None:
    docs = render({"operator.clusterWide": True})
    assert "--all-namespaces" in args_of(docs, "operator")
    assert not any(a.startswith("--namespace") for a in args_of(docs, "operator"))
    role = one(docs, "ClusterRole", "lbtrain-lbtrain-operator")
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {
        "modelruns",
        "modelruns/status",
        "jobs",
        "pods",
        "trainingtemplates",
        "trainingtemplates/status",
    } <= resources
    binding = one(docs, "ClusterRoleBinding", "lbtrain-lbtrain-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "lbtrain-operator", "namespace": "lbtrain"}
    ]
    # Only the heartbeat is written through a namespaced Role.
    assert one(docs, "Role", "lbtrain-operator-heartbeat")
    assert not find(docs, "Role", "lbtrain-operator")
    scan = one(docs, "ClusterRole", "lbtrain-lbtrain-operator-scan")
    assert [r["resources"] for r in scan["rules"]] == [["customresourcedefinitions"]]


def test_namespaced_by_default_and_watch_namespaces(render: Render) -> None:
    docs = render()
    assert not find(docs, "ClusterRole", "lbtrain-lbtrain-operator")
    scan = one(docs, "ClusterRole", "lbtrain-lbtrain-operator-scan")
    assert sorted(r["resources"][0] for r in scan["rules"]) == [
        "customresourcedefinitions",
        "namespaces",
    ]
    assert all(set(r["verbs"]) == {"list", "watch"} for r in scan["rules"])
    # No ClusterRole for the operator's workloads: the user-facing roles, and the one rule live
    # progress needs cluster-wide (TokenReview is not namespaced), which goes with its port.
    docs = render({"operator.clusterScan": False})
    names = {r["metadata"]["name"] for r in find(docs, "ClusterRole")}
    user_roles = {f"lbtrain-lbtrain-{role}" for role in ("view", "edit", "admin")}
    assert names == user_roles | {"lbtrain-lbtrain-operator-progress"}
    progress = one(docs, "ClusterRole", "lbtrain-lbtrain-operator-progress")
    assert progress["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]
    docs = render({"operator.clusterScan": False, "operator.progressPort": 0})
    assert {r["metadata"]["name"] for r in find(docs, "ClusterRole")} == user_roles

    docs = render({"operator.watchNamespaces": ["team-a", "lbtrain", "team-b"]})
    ns_args = [a for a in args_of(docs, "operator") if a.startswith("--namespace")]
    assert ns_args == ["--namespace=lbtrain", "--namespace=team-a", "--namespace=team-b"]
    roles = {d["metadata"]["namespace"]: d for d in find(docs, "Role", "lbtrain-operator")}
    assert set(roles) == {"lbtrain", "team-a", "team-b"}
    bindings = find(docs, "RoleBinding", "lbtrain-operator")
    assert {b["metadata"]["namespace"] for b in bindings} == set(roles)
    # The heartbeat Lease is written in the release namespace only.
    for ns, role in roles.items():
        writes = [r for r in role["rules"] if "create" in r["verbs"] and "leases" in r["resources"]]
        assert bool(writes) == (ns == "lbtrain"), ns
    secrets = find(docs, "Secret", "lbtrain-labelbox")
    assert {s["metadata"]["namespace"] for s in secrets} == {"lbtrain", "team-a", "team-b"}


def test_existing_secrets(render: Render) -> None:
    docs = render(VARIANTS["existing-secrets"], api_key=False)
    assert not find(docs, "Secret"), "nothing to create"
    assert "--api-key-secret=my-labelbox" in args_of(docs, "operator")
    assert "--secret-file=/etc/lbtrain/webhook/token" in args_of(docs, "webhook")
    webhook = one(docs, "Deployment", "lbtrain-webhook")["spec"]["template"]["spec"]
    vol = next(v for v in webhook["volumes"] if v["name"] == "webhook-secret")
    assert vol["secret"] == {
        "secretName": "my-webhook",
        "items": [{"key": "token", "path": "token"}],
    }
    operator = one(docs, "Deployment", "lbtrain-operator")["spec"]["template"]
    assert operator["spec"]["volumes"][0]["secret"]["secretName"] == "my-labelbox"
    assert "checksum/labelbox-api-key" not in operator["metadata"].get("annotations", {})


def test_api_key_change_restarts_the_operator(render: Render) -> None:
    def checksum(key: str) -> str:
        dep = one(render({"labelbox.apiKey": key}), "Deployment", "lbtrain-operator")
        return str(dep["spec"]["template"]["metadata"]["annotations"]["checksum/labelbox-api-key"])

    assert checksum("a") != checksum("b")


def test_ingress_with_tls(render: Render) -> None:
    docs = render(VARIANTS["ingress-tls"])
    ingress = one(docs, "Ingress", "lbtrain-webhook")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"secretName": "lbtrain-tls", "hosts": ["lbtrain.example.com"]}
    ]
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "lbtrain.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "lbtrain-webhook", "port": {"name": "http"}}
    args = args_of(docs, "webhook")
    assert "--tls-cert=/etc/lbtrain/tls/tls.crt" in args
    assert "--tls-key=/etc/lbtrain/tls/tls.key" in args
    container = one(docs, "Deployment", "lbtrain-webhook")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_service_monitor_and_metrics_policy(render: Render) -> None:
    docs = render(VARIANTS["service-monitor"])
    monitors = {d["metadata"]["name"]: d for d in find(docs, "ServiceMonitor")}
    assert set(monitors) == {"lbtrain-webhook", "lbtrain-operator"}
    for component, monitor in monitors.items():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
        # It selects the Service that exposes that component's metrics port.
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [
            s for s in find(docs, "Service") if selector.items() <= s["metadata"]["labels"].items()
        ]
        assert len(services) == 1, component
        assert any(p["name"] == "metrics" for p in services[0]["spec"]["ports"])
    for policy in find(docs, "NetworkPolicy"):
        metrics = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "metrics"]
        assert (
            metrics
            and metrics[0]["from"] == VARIANTS["service-monitor"]["networkPolicy.metricsFrom"]
        )


def test_network_policies(render: Render) -> None:
    docs = render()
    webhook = one(docs, "NetworkPolicy", "lbtrain-webhook")["spec"]
    operator = one(docs, "NetworkPolicy", "lbtrain-operator")["spec"]
    for spec in (webhook, operator):
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        dns = spec["egress"][0]["ports"]
        assert {(p["port"], p["protocol"]) for p in dns} == {(53, "UDP"), (53, "TCP")}
        api = spec["egress"][1]["ports"]
        assert {p["port"] for p in api} == {443, 6443}
    # Only the webhook port is open to ingress; the operator takes ingress only on its progress
    # port, from trainer pods (docs/progress.md), and none at all without it.
    assert webhook["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    trainer_pods = {"matchLabels": {"app.kubernetes.io/managed-by": "lbtrain"}}
    assert operator["ingress"] == [
        {
            "ports": [{"port": "progress", "protocol": "TCP"}],
            "from": [{"namespaceSelector": {}, "podSelector": trainer_pods}],
        }
    ]
    off = one(render({"operator.progressPort": 0}), "NetworkPolicy", "lbtrain-operator")
    assert off["spec"]["ingress"] == []
    assert len(webhook["egress"]) == 2, "the webhook never calls Labelbox"
    assert operator["egress"][2]["ports"] == [{"port": 443, "protocol": "TCP"}]
    # Selectors match the pods.
    for component, spec in (("webhook", webhook), ("operator", operator)):
        labels = one(docs, "Deployment", f"lbtrain-{component}")["spec"]["template"]["metadata"][
            "labels"
        ]
        assert spec["podSelector"]["matchLabels"].items() <= labels.items()
    docs = render(VARIANTS["load-balancer-pinned"])
    operator = one(docs, "NetworkPolicy", "lbtrain-operator")["spec"]
    assert operator["egress"][1]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert operator["egress"][2]["to"] == [{"ipBlock": {"cidr": "34.0.0.0/8"}}]


def test_pinned_images_and_load_balancer(render: Render) -> None:
    docs = render(VARIANTS["load-balancer-pinned"])
    for name in ("lbtrain-webhook", "lbtrain-operator"):
        pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == f"{IMAGE_REGISTRY}/lbtrain:0.1.0-rc.1@{DIGEST}"
        assert pod["imagePullSecrets"] == [{"name": "ghcr"}]
    service = one(docs, "Service", "lbtrain-webhook")["spec"]
    assert service["type"] == "LoadBalancer"
    assert service["loadBalancerSourceRanges"] == ["35.223.142.181/32"]
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    for tt in find(docs, "TrainingTemplate"):
        assert tt["spec"]["gpus"] == 2 and tt["spec"]["nodeSelector"] == {"gpu": "a100"}
    assert "--labelbox-endpoint=https://api.eu.labelbox.com/graphql" in args_of(docs, "operator")


def test_release_name_and_overrides(render: Render) -> None:
    docs = render(release="ml")
    assert one(docs, "Deployment", "ml-lbtrain-webhook")
    assert "--api-key-secret=ml-lbtrain-labelbox" in args_of_named(docs, "ml-lbtrain-operator")
    docs = render({"fullnameOverride": "lbt"}, release="whatever")
    assert one(docs, "Deployment", "lbt-operator") and one(docs, "Secret", "lbt-labelbox")


def args_of_named(docs: list[dict[str, Any]], name: str) -> list[str]:
    args: list[str] = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    return args


# --- bad values fail with a clear message --------------------------------------------------

BAD_VALUES = [
    ({"webhook.replicas": "two"}, "/webhook/replicas", "want integer"),
    ({"webhok": {"replicas": 2}}, "additional properties 'webhok' not allowed", ""),
    ({"trainingTemplates.templates.ner.gpu": 2}, "additional properties 'gpu' not allowed", ""),
    ({"webhook.logLevel": "LOUD"}, "/webhook/logLevel", "must be one of 'DEBUG'"),
    ({"webhook.port": 70000}, "/webhook/port", "want 65,535"),
    ({"operator.watchNamespaces": ["Team_A"]}, "/operator/watchNamespaces/0", "does not match"),
    ({"trainingTemplates.templates.ner.modelType": "-bad"}, "modelType", "does not match"),
    ({"image.digest": "sha256:nothex"}, "/image/digest", "does not match"),
    ({"webhook.service.type": "External"}, "/webhook/service/type", "must be one of"),
    ({"operator.clusterWide": "yes"}, "/operator/clusterWide", "want boolean"),
    ({"labelbox.endpoint": "api.labelbox.com"}, "/labelbox/endpoint", "does not match"),
    (
        {"artifacts.perRunClaim.retention": "Forever"},
        "/artifacts/perRunClaim/retention",
        "must be one of 'Delete'",
    ),
    (
        {"artifacts.perRunClaim.accessModes": ["RWO"]},
        "/artifacts/perRunClaim/accessModes/0",
        "must be one of",
    ),
    ({"imageRegistry": "https://127.0.0.1:1/ml"}, "/imageRegistry", "does not match"),
    ({"imageRegistry": "127.0.0.1:1/ml/"}, "/imageRegistry", "does not match"),
    # Cross-field rules, checked by the templates.
    ({"labelbox.existingSecret": "x"}, "either labelbox.apiKey or labelbox.existingSecret", ""),
    ({"webhook.tls.enabled": True}, "needs webhook.tls.secretName", ""),
    ({"webhook.ingress.enabled": True}, "needs webhook.ingress.host", ""),
    (
        {"operator.clusterWide": True, "operator.watchNamespaces": ["a"]},
        "either operator.clusterWide=true or operator.watchNamespaces",
        "",
    ),
    (
        {"trainingTemplates.templates.other": {"modelType": "ner"}},
        'serve modelType "ner"',
        "",
    ),
    ({"trainingTemplates.templates.other": {"gpus": 1}}, "other.modelType is required", ""),
    # One repository given is not both: the trainer's would still come from imageRegistry.
    (
        {"imageRegistry": "", "image.repository": "127.0.0.1:1/team/lbtrain"},
        "set imageRegistry",
        "trainingTemplates.defaults.image.repository",
    ),
]


@pytest.mark.parametrize(("values", "message", "detail"), BAD_VALUES)
def test_bad_values_are_rejected_clearly(
    helm: Helm, values: dict[str, Any], message: str, detail: str
) -> None:
    result = helm(
        "template",
        "lbtrain",
        str(CHART),
        *set_flags(REQUIRED_VALUES),
        *set_flags(values),
        check=False,
    )
    assert result.returncode != 0, f"accepted: {values}"
    assert message in result.stderr and detail in result.stderr, result.stderr


def test_missing_api_key_says_what_to_set(helm: Helm) -> None:
    result = helm("template", "lbtrain", str(CHART), check=False)
    assert result.returncode != 0
    assert "set labelbox.apiKey" in result.stderr and "labelbox.existingSecret" in result.stderr


def test_missing_image_registry_says_what_to_set_and_how_to_push(helm: Helm) -> None:
    """A user who installs without naming where the images are is told the value to set and
    the command that puts the images there, before anything is created."""
    result = helm(
        "install",
        "lbtrain",
        str(CHART),
        "--namespace=ml",
        "--dry-run=client",
        f"--set=labelbox.apiKey={API_KEY}",
        check=False,
    )
    assert result.returncode != 0
    assert "set imageRegistry" in result.stderr and "make push REGISTRY=" in result.stderr
    assert "<imageRegistry>/lbtrain-trainer" in result.stderr, result.stderr


def test_both_repositories_need_no_image_registry(render: Render) -> None:
    docs = render(
        {
            "imageRegistry": "",
            "image.repository": "127.0.0.1:1/team/lbtrain",
            "image.tag": "dev",
            "trainingTemplates.defaults.image.repository": "127.0.0.1:1/team/trainer",
        }
    )
    pod = one(docs, "Deployment", "lbtrain-webhook")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "127.0.0.1:1/team/lbtrain:dev"
    for tt in find(docs, "TrainingTemplate"):
        assert tt["spec"]["image"] == f"127.0.0.1:1/team/trainer:{APP_VERSION}"


def test_image_registry_names_both_images_and_a_repository_overrides_one(render: Render) -> None:
    docs = render(
        {
            "imageRegistry": "127.0.0.1:1/other/path",
            "trainingTemplates.defaults.image.repository": "127.0.0.1:1/team/trainer",
        }
    )
    for name in ("lbtrain-webhook", "lbtrain-operator"):
        pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == f"127.0.0.1:1/other/path/lbtrain:{APP_VERSION}"
    for tt in find(docs, "TrainingTemplate"):
        assert tt["spec"]["image"] == f"127.0.0.1:1/team/trainer:{APP_VERSION}"


# --- NOTES and README ----------------------------------------------------------------------


def test_notes_tell_the_url_and_how_to_read_the_secret(helm: Helm) -> None:
    text = notes(helm, VARIANTS["ingress-tls"])
    assert "Models > Settings > Model training" in text
    assert "https://lbtrain.example.com\n" in text
    assert (
        "kubectl get secret lbtrain-webhook-secret -n ml -o jsonpath='{.data.secret}'"
        " | base64 -d" in text
    )
    text = notes(helm, VARIANTS["existing-secrets"] | {"labelbox.apiKey": ""})
    assert "kubectl get secret my-webhook -n ml -o jsonpath='{.data.token}' | base64 -d" in text
    assert "create it in each namespace" in text
    text = notes(helm, {})
    assert "Nothing exposes it yet" in text and "generated for you" in text


# Values whose content is a Kubernetes type (or the template map): documented as a whole.
OPAQUE = {
    "resources",
    "podSecurityContext",
    "containerSecurityContext",
    "nodeSelector",
    "templates",
}


def leaf_keys(values: Any, prefix: str = "") -> list[str]:
    if isinstance(values, dict) and values and prefix.rsplit(".", 1)[-1] not in OPAQUE:
        keys = []
        for key, value in values.items():
            keys += leaf_keys(value, f"{prefix}.{key}" if prefix else key)
        return keys
    return [prefix]


def test_readme_explains_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    missing = [key for key in leaf_keys(values) if f"`{key}`" not in readme]
    assert not missing, f"README.md does not explain: {missing}"
    for name in values["trainingTemplates"]["templates"]:
        assert name in readme


def test_schema_covers_every_value() -> None:
    """Every key of values.yaml is declared in values.schema.json (which rejects unknown keys)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: Any, sch: dict[str, Any], path: str) -> None:
        if not isinstance(node, dict) or "properties" not in sch:
            return
        for key, value in node.items():
            assert key in sch["properties"] or isinstance(sch.get("additionalProperties"), dict), (
                f"{path}.{key} is not in values.schema.json"
            )
            walk(
                value,
                sch["properties"].get(key) or sch.get("additionalProperties") or {},
                f"{path}.{key}",
            )

    walk(values, schema, "")


def test_chart_files_are_plain(tmp_path: Path, helm: Helm) -> None:
    """`helm package` stores the CRDs themselves (the link is followed), so a packaged chart
    works anywhere."""
    helm("package", str(CHART), f"--destination={tmp_path}")
    [package] = tmp_path.glob("lbtrain-*.tgz")
    with tarfile.open(package) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for name in ("modelruns.lbtrain.io.yaml", "trainingtemplates.lbtrain.io.yaml"):
            member = members[f"lbtrain/crds/{name}"]
            assert member.isfile()
            data = tar.extractfile(member)
            assert data is not None
            assert data.read() == (REPO / "crds" / name).read_bytes()
