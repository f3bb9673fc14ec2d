"""The chart's operations kit: the PrometheusRule and the Grafana dashboard, rendered by helm.

Every alert expression and dashboard query is parsed by a real PromQL parser, and every metric
it names must be one the operator or the webhook really exports: the names are collected from
their own registries, as Prometheus would scrape them (a counter's `_total`, a histogram's
`_bucket`/`_sum`/`_count`). So renaming a metric in the code, or a typo in a query, fails here
instead of leaving a silent alert or an empty panel. Every alert's runbook link must land on a
section of docs/troubleshooting.md.
"""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
from prometheus_client import CollectorRegistry

from lbtrain_operator.metrics import Metrics as OperatorMetrics
from lbtrain_webhook.metrics import Metrics as WebhookMetrics

from .helpers import CHART, REPO, Render, find, one

TROUBLESHOOTING = REPO / "docs" / "troubleshooting.md"
RULE = {"metrics.prometheusRule.enabled": True}
DASHBOARD = {"metrics.dashboard.enabled": True}
# Prometheus' own series, which exist for every scraped target.
PROMETHEUS_SERIES = {"up"}
# Grafana's variables in range selectors, replaced by a value the parser accepts.
GRAFANA_RANGES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d|w|y)$")


def exported_names(registry: CollectorRegistry) -> set[str]:
    """The series names Prometheus scrapes from `registry`."""
    names = set()
    for family in registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "gauge": ("",),
        }[family.type]
        names |= {family.name + suffix for suffix in suffixes}
    return names


EXPORTED = (
    exported_names(OperatorMetrics().registry)
    | exported_names(WebhookMetrics().registry)
    | PROMETHEUS_SERIES
)


def metric_names(expr: str) -> set[str]:
    """Parse `expr` as PromQL (failing on a syntax error) and answer the metrics it selects."""
    for variable, value in GRAFANA_RANGES.items():
        expr = expr.replace(variable, value)
    try:
        ast = promql_parser.parse(expr)
    except ValueError as exc:
        pytest.fail(f"not PromQL: {expr!r}: {exc}")
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(ast, visit)
    return names


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings of `markdown` (lower case, spaces to dashes)."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def rules_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rule = one(docs, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    config_map = one(docs, "ConfigMap", "lbtrain-dashboard")
    [text] = config_map["data"].values()
    dashboard: dict[str, Any] = json.loads(text)
    return dashboard


def queries_of(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL query of the dashboard: its panels' targets and its variables' queries
    (`label_values(METRIC, label)` asks for METRIC's series)."""
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), *\w+\)", variable["query"]["query"])
            assert match, variable["query"]
            queries.append(match.group(1))
    return queries


def test_neither_is_rendered_by_default(render: Render) -> None:
    docs = render({"metrics.serviceMonitor.enabled": True})
    assert not find(docs, "PrometheusRule")
    assert not [d for d in find(docs, "ConfigMap") if "dashboard" in d["metadata"]["name"]]


def test_every_alert_is_promql_on_real_metrics_with_a_runbook(render: Render) -> None:
    docs = render(RULE | {"metrics.prometheusRule.labels": {"release": "prometheus"}})
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["namespace"] == "lbtrain"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lbtrain"
    rules = rules_of(docs)
    sections = anchors(TROUBLESHOOTING.read_text())
    used: set[str] = set()
    for r in rules:
        names = metric_names(r["expr"])
        assert names, r["alert"]
        assert names <= EXPORTED, f"{r['alert']} uses unknown metrics {names - EXPORTED}"
        used |= names
        # Each alert looks at this release's namespace only.
        assert 'namespace="lbtrain"' in r["expr"], r["alert"]
        assert DURATION.match(r["for"]), r
        assert r["labels"]["severity"] in ("warning", "critical")
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        base, _, anchor = r["annotations"]["runbook_url"].partition("#")
        assert base.endswith("/docs/troubleshooting.md")
        assert anchor == r["alert"].lower() and anchor in sections, r["alert"]
    alerts = {r["alert"] for r in rules}
    assert {"LbtrainRunsFailing", "LbtrainLabelboxBacklog", "LbtrainWebhookErrors"} <= alerts
    assert {"LbtrainWebhookSignatureFailures", "LbtrainOperatorDown"} <= alerts
    # The operator's outbox, the webhook's 5xx and signature failures, the failed runs.
    assert {
        "lbtrain_labelbox_backlog",
        "lbtrain_labelbox_report_failures_total",
        "lbtrain_webhook_requests_total",
        "lbtrain_webhook_signature_failures_total",
        "lbtrain_modelruns_finished_total",
        "lbtrain_modelruns_active",
    } <= used


def test_down_alerts_select_the_service_monitor_jobs(render: Render) -> None:
    """prometheus-operator names a target's job after its Service: the "down" alerts must
    name the Services the ServiceMonitor scrapes, or they fire for ever."""
    docs = render(RULE | {"metrics.serviceMonitor.enabled": True}, release="ml")
    services = {d["metadata"]["name"] for d in find(docs, "Service")}
    by_alert = {r["alert"]: r["expr"] for r in rules_of(docs)}
    operator_job = re.search(r'job="([^"]+)"', by_alert["LbtrainOperatorDown"])
    assert operator_job and operator_job.group(1) in services
    webhook_jobs = re.search(r'job=~"([^"]+)"', by_alert["LbtrainWebhookDown"])
    assert webhook_jobs
    assert [s for s in services if re.fullmatch(webhook_jobs.group(1), s)], services
    for expr in (by_alert["LbtrainOperatorDown"], by_alert["LbtrainWebhookDown"]):
        assert expr.startswith("absent(up{") and expr.endswith("== 1)")


def test_alert_tunables_reach_the_rules(render: Render) -> None:
    alerts = "metrics.prometheusRule.alerts"
    docs = render(
        RULE
        | {
            f"{alerts}.runsFailing.window": "6h",
            f"{alerts}.runsFailing.ratio": 0.2,
            f"{alerts}.runsFailing.minFailures": 5,
            f"{alerts}.runsFailing.for": "1h",
            f"{alerts}.runsFailing.severity": "critical",
            f"{alerts}.webhookErrors.enabled": False,
            "metrics.prometheusRule.alertLabels": {"team": "ml-platform"},
            "metrics.prometheusRule.runbookBaseUrl": "https://wiki.example.com/lbtrain",
        }
    )
    by_alert = {r["alert"]: r for r in rules_of(docs)}
    assert "LbtrainWebhookErrors" not in by_alert
    failing = by_alert["LbtrainRunsFailing"]
    assert "[6h]" in failing["expr"] and "> 0.2" in failing["expr"]
    assert ">= 5" in failing["expr"]
    assert failing["for"] == "1h" and failing["labels"]["severity"] == "critical"
    metric_names(failing["expr"])  # still PromQL
    for r in by_alert.values():
        assert r["labels"]["team"] == "ml-platform"
        assert r["annotations"]["runbook_url"].startswith("https://wiki.example.com/lbtrain#")


def test_bad_alert_values_are_refused_by_the_schema(helm: Any) -> None:
    result = helm(
        "template",
        "lbtrain",
        str(CHART),
        "--set=labelbox.apiKey=x",
        "--set=metrics.prometheusRule.enabled=true",
        "--set=metrics.prometheusRule.alerts.runsFailing.window=an hour",
        check=False,
    )
    assert result.returncode != 0
    assert "metrics.prometheusRule.alerts.runsFailing.window" in result.stderr.replace("/", ".")


def test_dashboard_queries_are_promql_on_real_metrics(render: Render) -> None:
    docs = render(DASHBOARD)
    config_map = one(docs, "ConfigMap", "lbtrain-dashboard")
    kubernetes_validate.validate(config_map, "1.35", strict=True)
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "lbtrain"
    dashboard = dashboard_of(docs)
    assert dashboard["uid"] == "lbtrain" and dashboard["panels"]
    used: set[str] = set()
    for query in queries_of(dashboard):
        names = metric_names(query)
        assert names and names <= EXPORTED, f"{query!r} uses unknown metrics {names - EXPORTED}"
        used |= names
    # Every metric either component exports is on the dashboard somewhere (histograms by
    # their buckets), so a new metric is either shown or consciously left out here.
    shown = {n for n in EXPORTED if not n.endswith(("_sum", "_count"))} - PROMETHEUS_SERIES
    assert not shown - used, f"not on the dashboard: {sorted(shown - used)}"
    # Each panel's data source is the dashboard's variable, so it works on any Grafana.
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_labels_namespace_and_annotations_are_configurable(render: Render) -> None:
    docs = render(
        DASHBOARD
        | {
            "metrics.dashboard.labels": {"grafana_dashboard": None, "dashboards": "lbtrain"},
            "metrics.dashboard.annotations": {"grafana_folder": "ML"},
            "metrics.dashboard.namespace": "monitoring",
        }
    )
    config_map = one(docs, "ConfigMap", "lbtrain-dashboard")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["dashboards"] == "lbtrain"
    assert "grafana_dashboard" not in config_map["metadata"]["labels"]
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "ML"}
    assert dashboard_of(docs)["title"] == "lbtrain"
