"""The chart's Kueue values: the operator gets Kueue RBAC and a default queue only when asked.

A cluster without Kueue must see no rule naming Kueue's groups (a platform team reviews every
grant), and a cluster with it gets exactly what a queued run's status needs: its Workload
(get/list/watch) and its place in the queue (the visibility API's pending workloads, get).
"""

from __future__ import annotations

from typing import Any

from .helpers import CHART, KUBE_VERSION, Helm, Render, find, one, required_values, set_args

KUEUE_GROUPS = {"kueue.x-k8s.io", "visibility.kueue.x-k8s.io"}


def operator_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rule of the operator's Roles and ClusterRoles."""
    roles = [
        d
        for d in find(docs, "Role") + find(docs, "ClusterRole")
        if d["metadata"]["name"].endswith("-operator")
    ]
    assert roles
    return [rule for role in roles for rule in role["rules"]]


def kueue_grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        if group in KUEUE_GROUPS
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def operator_args(docs: list[dict[str, Any]]) -> list[str]:
    deployment = one(docs, "Deployment", "lbtrain-operator")
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


WANTED = {
    ("kueue.x-k8s.io", "workloads", "get"),
    ("kueue.x-k8s.io", "workloads", "list"),
    ("kueue.x-k8s.io", "workloads", "watch"),
    ("visibility.kueue.x-k8s.io", "localqueues/pendingworkloads", "get"),
}


def test_without_kueue_no_kueue_rule_and_no_default_queue(render: Render) -> None:
    for values in ({}, {"operator.clusterWide": True}):
        docs = render(values)
        assert kueue_grants(operator_rules(docs)) == set(), values
        assert not [a for a in operator_args(docs) if a.startswith("--default-queue")]


def test_with_kueue_the_operator_reads_workloads_and_queue_positions(render: Render) -> None:
    docs = render({"kueue.enabled": True, "operator.watchNamespaces": ["team-a"]})
    roles = [d for d in find(docs, "Role") if d["metadata"]["name"] == "lbtrain-operator"]
    assert {r["metadata"]["namespace"] for r in roles} == {"lbtrain", "team-a"}
    for role in roles:  # every watched namespace: a run there may be queued
        assert kueue_grants(role["rules"]) == WANTED, role["metadata"]["namespace"]
    assert not [a for a in operator_args(docs) if a.startswith("--default-queue")]
    docs = render({"kueue.enabled": True, "operator.clusterWide": True})
    assert kueue_grants(operator_rules(docs)) == WANTED


def test_a_default_queue_reaches_the_operator(render: Render) -> None:
    docs = render({"kueue.enabled": True, "kueue.defaultQueue": "team-queue"})
    assert "--default-queue=team-queue" in operator_args(docs)


def test_a_default_queue_without_kueue_is_refused(helm: Helm) -> None:
    values = {**required_values(), "kueue.defaultQueue": "team-queue"}
    result = helm(
        "template", "lbtrain", str(CHART), f"--kube-version={KUBE_VERSION}", *set_args(values),
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "kueue.defaultQueue needs kueue.enabled" in result.stderr
