"""The chart, offline, continued (test_chart_render.py holds the general checks): where the
metrics are exposed, the plain-HTTP LoadBalancer warning, the `helm test` Pod, what watched
namespaces get, and the default templates' node placement."""

from __future__ import annotations

from typing import Any

import yaml

from .helpers import CHART, REPO, Helm, Render, find, notes, one

LOAD_BALANCER = {"webhook.service.type": "LoadBalancer"}
SCRIPT = (CHART / "files" / "check_models.py").read_text()


def ports(service: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["port"] for p in service["spec"]["ports"]}


def pod_labels(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    labels: dict[str, str] = one(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
    return labels


# --- metrics on their own Service --------------------------------------------------------------


def test_a_load_balancer_webhook_service_has_no_metrics_port(render: Render) -> None:
    docs = render(LOAD_BALANCER)
    webhook = one(docs, "Service", "lbtrain-webhook")
    assert webhook["spec"]["type"] == "LoadBalancer"
    assert ports(webhook) == {"http": 80}, "metrics must not be exposed with the webhook"
    metrics = one(docs, "Service", "lbtrain-webhook-metrics")
    assert metrics["spec"]["type"] == "ClusterIP"
    assert metrics["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    # It reaches the webhook pods (not the operator's).
    selector = metrics["spec"]["selector"]
    assert selector.items() <= pod_labels(docs, "lbtrain-webhook").items()
    assert not selector.items() <= pod_labels(docs, "lbtrain-operator").items()


def test_metrics_off_means_no_metrics_service(render: Render) -> None:
    docs = render({"webhook.metricsPort": 0, "operator.metricsPort": 0})
    services = {s["metadata"]["name"] for s in find(docs, "Service")}
    assert services == {"lbtrain-webhook", "lbtrain-operator-progress"}


def test_service_monitors_scrape_the_metrics_services_only(render: Render) -> None:
    docs = render(LOAD_BALANCER | {"metrics.serviceMonitor.enabled": True})
    for component in ("webhook", "operator"):
        monitor = one(docs, "ServiceMonitor", f"lbtrain-{component}")
        selector = monitor["spec"]["selector"]["matchLabels"]
        selected = [
            s["metadata"]["name"]
            for s in find(docs, "Service")
            if selector.items() <= s["metadata"]["labels"].items()
        ]
        assert selected == [f"lbtrain-{component}-metrics"], component
    # The webhook's policy opens the pod port those Services target, and only when scraped.
    policy = one(docs, "NetworkPolicy", "lbtrain-webhook")["spec"]
    assert {"ports": [{"port": "metrics", "protocol": "TCP"}]} in policy["ingress"]
    unscraped = one(render(LOAD_BALANCER), "NetworkPolicy", "lbtrain-webhook")["spec"]
    assert unscraped["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]


# --- NOTES: plain HTTP on a LoadBalancer --------------------------------------------------------

WARNING = "WARNING: this LoadBalancer serves plain HTTP"


def test_notes_warn_of_a_plain_http_load_balancer(helm: Helm) -> None:
    text = notes(helm, LOAD_BALANCER)
    assert WARNING in text
    assert "http://<EXTERNAL-IP>:80" in text
    assert "webhook.tls.enabled=true" in text and "webhook.ingress.tls" in text
    # HTTPS from the pod, a ClusterIP behind an Ingress with TLS, or no exposure: no warning.
    tls = {"webhook.tls.enabled": True, "webhook.tls.secretName": "pod-tls"}
    assert WARNING not in notes(helm, LOAD_BALANCER | tls)
    assert "https://<EXTERNAL-IP>:80" in notes(helm, LOAD_BALANCER | tls)
    ingress = {
        "webhook.ingress.enabled": True,
        "webhook.ingress.host": "lbtrain.example.com",
        "webhook.ingress.tls": [{"secretName": "t", "hosts": ["lbtrain.example.com"]}],
    }
    assert WARNING not in notes(helm, ingress)
    assert WARNING not in notes(helm, {})


def test_notes_show_helm_test(helm: Helm) -> None:
    assert "helm test lbtrain -n ml --logs" in notes(helm, {})


# --- the helm test Pod ------------------------------------------------------------------------


def helm_test_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pods = find(docs, "Pod")
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}


def test_helm_test_pod_calls_the_webhook_service_with_its_secret(render: Render) -> None:
    docs = render()
    pod = helm_test_pod(docs)
    assert pod["metadata"]["name"] == "lbtrain-test-models"
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False, "it needs no API access"
    [container] = spec["containers"]
    webhook = one(docs, "Deployment", "lbtrain-webhook")["spec"]["template"]["spec"]
    # The webhook's own image: nothing else to pull or mirror.
    assert container["image"] == webhook["containers"][0]["image"]
    assert container["command"] == ["python3", "-c", SCRIPT]
    assert env_of(pod)["LBTRAIN_WEBHOOK_URL"] == "http://lbtrain-webhook.lbtrain.svc:80"
    assert env_of(pod)["LBTRAIN_SECRET_FILE"] == "/etc/lbtrain/webhook/secret"
    # The same Secret and key the webhook verifies with.
    [volume] = spec["volumes"]
    assert (
        volume["secret"]
        == next(v for v in webhook["volumes"] if v["name"] == "webhook-secret")["secret"]
    )
    assert container["volumeMounts"] == [
        {"name": "webhook-secret", "mountPath": "/etc/lbtrain/webhook", "readOnly": True}
    ]
    # Restricted like the webhook (validate_all in test_chart_render checks the schema).
    assert spec["securityContext"] == webhook["securityContext"]
    assert container["securityContext"] == webhook["containers"][0]["securityContext"]


def test_helm_test_pod_follows_tls_port_and_existing_secret(render: Render) -> None:
    docs = render(
        {
            "webhook.tls.enabled": True,
            "webhook.tls.secretName": "pod-tls",
            "webhook.service.port": 8443,
            "webhook.secret.existingSecret": "my-webhook",
            "webhook.secret.existingSecretKey": "token",
            "imagePullSecrets": [{"name": "pull"}],
        },
        release="ml",
        namespace="team",
    )
    pod = helm_test_pod(docs)
    assert env_of(pod)["LBTRAIN_WEBHOOK_URL"] == "https://ml-lbtrain-webhook.team.svc:8443"
    assert env_of(pod)["LBTRAIN_SECRET_FILE"] == "/etc/lbtrain/webhook/token"
    assert pod["spec"]["volumes"][0]["secret"] == {
        "secretName": "my-webhook",
        "items": [{"key": "token", "path": "token"}],
    }
    assert pod["spec"]["imagePullSecrets"] == [{"name": "pull"}]
    assert pod["metadata"]["namespace"] == "team"


# --- watched namespaces get what a run there needs ---------------------------------------------


def in_namespace(docs: list[dict[str, Any]], kind: str, ns: str) -> dict[str, Any]:
    return {d["metadata"]["name"]: d for d in find(docs, kind) if d["metadata"]["namespace"] == ns}


def test_every_watched_namespace_gets_the_default_templates_and_claim(render: Render) -> None:
    # The shared claim (off by default: each run gets its own) is the one a namespace must hold.
    docs = render(
        {
            "operator.watchNamespaces": ["team-a", "team-b"],
            "artifacts.persistentVolumeClaim.create": True,
        }
    )
    home = in_namespace(docs, "TrainingTemplate", "lbtrain")
    assert len(home) == 6
    for ns in ("team-a", "team-b"):
        tts = in_namespace(docs, "TrainingTemplate", ns)
        assert set(tts) == set(home), ns
        for name, tt in tts.items():
            assert tt["spec"] == home[name]["spec"], (ns, name)
        # The templates' claim and Secret exist in that namespace too (pods use their own).
        [claim] = {
            v["persistentVolumeClaim"]["claimName"]
            for tt in tts.values()
            for v in tt["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert claim in in_namespace(docs, "PersistentVolumeClaim", ns), ns
        assert "lbtrain-labelbox" in in_namespace(docs, "Secret", ns), ns
        assert "lbtrain-operator" in in_namespace(docs, "Role", ns), ns


def test_cluster_wide_templates_stay_in_the_release_namespace(render: Render) -> None:
    docs = render({"operator.clusterWide": True, "artifacts.persistentVolumeClaim.create": True})
    assert {d["metadata"]["namespace"] for d in find(docs, "TrainingTemplate")} == {"lbtrain"}
    assert {d["metadata"]["namespace"] for d in find(docs, "PersistentVolumeClaim")} == {"lbtrain"}


def test_watched_namespaces_with_templates_off_or_an_existing_claim(render: Render) -> None:
    docs = render(
        {
            "operator.watchNamespaces": ["team-a"],
            "artifacts.persistentVolumeClaim.existingClaim": "models",
        }
    )
    assert not find(docs, "PersistentVolumeClaim"), "an existing claim is the user's, everywhere"
    assert len(in_namespace(docs, "TrainingTemplate", "team-a")) == 6
    docs = render({"operator.watchNamespaces": ["team-a"], "trainingTemplates.enabled": False})
    assert not find(docs, "TrainingTemplate")
    assert "lbtrain-labelbox" in in_namespace(docs, "Secret", "team-a")


# --- node placement ----------------------------------------------------------------------------


def test_default_templates_have_no_node_selector(render: Render) -> None:
    """The GPU request alone places a trainer pod; nvidia.com/gpu.present is set only by NVIDIA
    GPU Feature Discovery, so requiring it left runs Pending on clusters without it."""
    tts = find(render(), "TrainingTemplate")
    assert len(tts) == 6
    for tt in tts:
        spec = tt["spec"]
        assert "nodeSelector" not in spec and "affinity" not in spec, tt["metadata"]["name"]
        assert spec["gpus"] == 1 and spec["gpuResourceName"] == "nvidia.com/gpu"
    for path in sorted((REPO / "examples" / "templates").glob("*.yaml")):
        assert "nodeSelector" not in yaml.safe_load(path.read_text())["spec"], path.name
    # A pool's label, as the README shows, reaches every template.
    pool = {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    for tt in find(render({"trainingTemplates.defaults.nodeSelector": pool}), "TrainingTemplate"):
        assert tt["spec"]["nodeSelector"] == pool
