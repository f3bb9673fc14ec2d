"""The chart, offline: the conventions a platform engineer expects of it. User-facing
ClusterRoles aggregated into view/edit/admin, extraObjects, NetworkPolicy extension points, the
webhook Service's appProtocol and the nginx backend annotation, the webhook Secret kept on
uninstall, and Chart.yaml's Artifact Hub image list. (On the API server: test_chart_user_roles.py.)"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from .helpers import APP_VERSION, CHART, REQUIRED_VALUES, Helm, Render, find, one
from .helpers import set_args as set_flags

AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"
NGINX_BACKEND = "nginx.ingress.kubernetes.io/backend-protocol"
TLS = {"webhook.tls.enabled": True, "webhook.tls.secretName": "lbtrain-pod-tls"}
INGRESS = {"webhook.ingress.enabled": True, "webhook.ingress.host": "lbtrain.example.com"}
PROXY_EGRESS = {
    "to": [{"ipBlock": {"cidr": "10.20.0.5/32"}}],
    "ports": [{"port": 3128, "protocol": "TCP"}],
}
MESH_INGRESS = {
    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mesh"}}}]
}


def aggregated(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ClusterRoles aggregated into a built-in role, by that role (view, edit, admin)."""
    found = {}
    for role in find(docs, "ClusterRole"):
        for label, value in role["metadata"]["labels"].items():
            if label.startswith(AGGREGATE) and value == "true":
                found[label.removeprefix(AGGREGATE)] = role
    return found


# --- user-facing roles -------------------------------------------------------------------------


def test_view_edit_and_admin_get_lbtrain_rules(render: Render) -> None:
    roles = aggregated(render(namespace="ml"))
    assert set(roles) == {"view", "edit", "admin"}
    # Cluster-scoped names carry the namespace, so releases of two namespaces never collide.
    assert {r["metadata"]["name"] for r in roles.values()} == {
        "ml-lbtrain-view",
        "ml-lbtrain-edit",
        "ml-lbtrain-admin",
    }
    assert roles["view"]["rules"] == [
        {
            "apiGroups": ["lbtrain.io"],
            "resources": [
                "modelruns",
                "modelruns/status",
                "trainingtemplates",
                "trainingtemplates/status",
            ],
            "verbs": ["get", "list", "watch"],
        }
    ]
    writes = ["create", "update", "patch", "delete", "deletecollection"]
    # Editors run models; only admins shape what a run may execute (the templates).
    assert roles["edit"]["rules"] == [
        {"apiGroups": ["lbtrain.io"], "resources": ["modelruns"], "verbs": writes}
    ]
    assert roles["admin"]["rules"] == [
        {"apiGroups": ["lbtrain.io"], "resources": ["trainingtemplates"], "verbs": writes}
    ]
    # Each role aggregates into one built-in role only (view reaches edit and admin through the
    # built-in chain), and nobody but the operator writes status.
    for role in roles.values():
        assert sum(k.startswith(AGGREGATE) for k in role["metadata"]["labels"]) == 1
        for rule in role["rules"]:
            assert not (set(rule["verbs"]) - {"get", "list", "watch"}) or not any(
                r.endswith("/status") for r in rule["resources"]
            )
    assert roles["view"]["metadata"]["labels"]["app.kubernetes.io/instance"] == "lbtrain"


@pytest.mark.parametrize(
    "values", [{"rbac.aggregateToDefaultRoles": False}, {"rbac.create": False}]
)
def test_no_user_facing_roles_when_turned_off(render: Render, values: dict[str, Any]) -> None:
    assert aggregated(render(values)) == {}


# --- extraObjects ------------------------------------------------------------------------------


def test_extra_objects_as_objects_and_strings_go_through_tpl(render: Render) -> None:
    certificate = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {
            "name": '{{ include "lbtrain.fullname" . }}-pod-tls',
            "namespace": "{{ .Release.Namespace }}",
        },
        "spec": {
            "secretName": "{{ .Values.webhook.tls.secretName }}",
            "dnsNames": ['{{ include "lbtrain.webhook.fullname" . }}.{{ .Release.Namespace }}.svc'],
            "issuerRef": {"name": "internal-ca", "kind": "ClusterIssuer"},
        },
    }
    as_text = (
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: {{ .Release.Name }}-team-notes\n"
        "  labels: {team: ml-platform}\n"
        "data:\n"
        "  registry: {{ .Values.imageRegistry | quote }}\n"
    )
    docs = render({**TLS, "extraObjects": [certificate, as_text]}, namespace="ml", release="prod")
    cert = one(docs, "Certificate", "prod-lbtrain-pod-tls")
    assert cert["metadata"]["namespace"] == "ml"
    assert cert["spec"]["secretName"] == "lbtrain-pod-tls"
    assert cert["spec"]["dnsNames"] == ["prod-lbtrain-webhook.ml.svc"]
    notes = one(docs, "ConfigMap", "prod-team-notes")
    assert notes["data"] == {"registry": REQUIRED_VALUES["imageRegistry"]}
    assert notes["metadata"]["labels"] == {"team": "ml-platform"}
    # None by default.
    assert find(render(), "Certificate") == []


def test_extra_objects_must_be_objects_or_strings(helm: Helm) -> None:
    result = helm(
        "template",
        "lbtrain",
        str(CHART),
        *set_flags(REQUIRED_VALUES | {"extraObjects": [42]}),
        check=False,
    )
    assert result.returncode != 0
    assert "extraObjects" in result.stderr, result.stderr


# --- NetworkPolicy extension points -------------------------------------------------------------


# Trainer pods (in any namespace the operator serves) reach the operator's live-progress port;
# what a report may change is decided by its TokenReview, not by the network (docs/progress.md).
PROGRESS_INGRESS = {
    "ports": [{"port": "progress", "protocol": "TCP"}],
    "from": [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "lbtrain"}},
        }
    ],
}


def test_extra_egress_and_ingress_are_appended_to_both_policies(render: Render) -> None:
    plain = {p["metadata"]["name"]: p["spec"] for p in find(render(), "NetworkPolicy")}
    docs = render(
        {"networkPolicy.extraEgress": [PROXY_EGRESS], "networkPolicy.extraIngress": [MESH_INGRESS]}
    )
    extended = {p["metadata"]["name"]: p["spec"] for p in find(docs, "NetworkPolicy")}
    assert set(extended) == set(plain) == {"lbtrain-webhook", "lbtrain-operator"}
    for name, spec in extended.items():
        # The chart's own rules stay, in order; the extras come after them.
        assert spec["egress"] == [*plain[name]["egress"], PROXY_EGRESS], name
        assert spec["ingress"] == [*plain[name]["ingress"], MESH_INGRESS], name
    # The operator's own ingress is the progress port, from trainer pods only; then the extra.
    assert extended["lbtrain-operator"]["ingress"] == [PROGRESS_INGRESS, MESH_INGRESS]


def test_extra_ingress_keeps_the_metrics_rule(render: Render) -> None:
    scrape = {"metrics.serviceMonitor.enabled": True}
    docs = render({**scrape, "networkPolicy.extraIngress": [MESH_INGRESS]})
    operator = one(docs, "NetworkPolicy", "lbtrain-operator")["spec"]
    assert operator["ingress"] == [
        PROGRESS_INGRESS,
        {"ports": [{"port": "metrics", "protocol": "TCP"}]},
        MESH_INGRESS,
    ]


# --- the webhook Service and Ingress -----------------------------------------------------------


@pytest.mark.parametrize(("values", "protocol"), [({}, "http"), (TLS, "https")])
def test_webhook_service_says_what_the_pod_speaks(
    render: Render, values: dict[str, Any], protocol: str
) -> None:
    [port] = one(render(values), "Service", "lbtrain-webhook")["spec"]["ports"]
    assert port["appProtocol"] == protocol
    assert port["name"] == "http" and port["targetPort"] == "http"


@pytest.mark.parametrize(
    ("class_name", "annotated"),
    [("", True), ("nginx", True), ("internal-nginx", True), ("traefik", False), ("alb", False)],
)
def test_nginx_backend_protocol_only_for_nginx_or_the_default_class(
    render: Render, class_name: str, annotated: bool
) -> None:
    values = {**TLS, **INGRESS, "webhook.ingress.className": class_name}
    ingress = one(render(values), "Ingress", "lbtrain-webhook")
    annotations = ingress["metadata"].get("annotations") or {}
    assert (annotations.get(NGINX_BACKEND) == "HTTPS") is annotated, annotations
    # A plain-HTTP pod never needs it.
    values["webhook.tls.enabled"] = False
    ingress = one(render(values), "Ingress", "lbtrain-webhook")
    assert NGINX_BACKEND not in (ingress["metadata"].get("annotations") or {})


def test_own_backend_protocol_annotation_wins(render: Render) -> None:
    values = {
        **TLS,
        **INGRESS,
        "webhook.ingress.className": "nginx",
        "webhook.ingress.annotations": {NGINX_BACKEND: "GRPCS"},
    }
    ingress = one(render(values), "Ingress", "lbtrain-webhook")
    assert ingress["metadata"]["annotations"] == {NGINX_BACKEND: "GRPCS"}


# --- the webhook Secret -------------------------------------------------------------------------


def test_generated_webhook_secret_is_kept_on_uninstall(render: Render) -> None:
    secret = one(render(), "Secret", "lbtrain-webhook-secret")
    assert secret["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    secret = one(render({"webhook.secret.keep": False}), "Secret", "lbtrain-webhook-secret")
    assert "annotations" not in secret["metadata"]
    # The Labelbox API key Secrets are not kept: the value lives in your values file.
    for labelbox in find(render(), "Secret", "lbtrain-labelbox"):
        assert "annotations" not in labelbox["metadata"]


# --- Chart.yaml ----------------------------------------------------------------------------------


def test_artifact_hub_lists_the_images_the_chart_runs(render: Render) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    listed = yaml.safe_load(chart["annotations"]["artifacthub.io/images"])
    assert [i["name"] for i in listed] == ["lbtrain", "lbtrain-trainer"]
    [registry] = {i["image"].rsplit("/", 1)[0] for i in listed}  # one placeholder registry
    # The images a release with that imageRegistry runs, tagged with appVersion.
    docs = render({"imageRegistry": registry})
    running = {
        c["image"]
        for d in find(docs, "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    } | {t["spec"]["image"] for t in find(docs, "TrainingTemplate")}
    assert {i["image"] for i in listed} == running
    assert all(i["image"].endswith(f":{APP_VERSION}") for i in listed)
