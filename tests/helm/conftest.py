"""Fixtures for the Helm chart tests: the testbed's helm binary, rendering, releases."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lbtrain_dev.testbed import ControlPlane

from .helpers import (
    CHART,
    KUBE_VERSION,
    Helm,
    Releases,
    Render,
    documents,
    required_values,
    set_args,
)


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


@pytest.fixture(scope="session")
def helm(testbed_bin: Path, helm_home: Path) -> Helm:
    """helm for offline work (lint, template): needs the binary, not the control plane."""
    return Helm(testbed_bin / "helm", helm_home)


@pytest.fixture(scope="session")
def render(helm: Helm) -> Render:
    """`helm template` of the chart with `values` (dotted keys), as parsed documents."""

    def run(
        values: dict[str, Any] | None = None,
        *,
        namespace: str = "lbtrain",
        release: str = "lbtrain",
        api_key: bool = True,
        chart: Path = CHART,
        extra: tuple[str, ...] = (),
    ) -> list[dict[str, Any]]:
        vals = required_values(api_key=api_key) if chart == CHART else {}
        vals.update(values or {})
        result = helm(
            "template",
            release,
            str(chart),
            f"--namespace={namespace}",
            f"--kube-version={KUBE_VERSION}",
            *set_args(vals),
            *extra,
        )
        return documents(result.stdout)

    return run


@pytest.fixture(scope="session")
def cluster_helm(control_plane: ControlPlane, helm_home: Path) -> Helm:
    return Helm(control_plane.bin_dir / "helm", helm_home, control_plane.kubeconfig)


@pytest.fixture
def releases(cluster_helm: Helm) -> Iterator[Releases]:
    rel = Releases(cluster_helm)
    yield rel
    rel.cleanup()


@pytest.fixture
def extra_namespace(kubectl) -> Iterator[str]:
    """A second namespace (for watchNamespaces and cluster-wide checks); deleted after."""
    name = f"t-{secrets.token_hex(4)}"
    result = kubectl("create", "namespace", name)
    assert result.returncode == 0, result.stderr
    kubectl("label", "namespace", name, "lbtrain.io/test=true")
    yield name
    kubectl("delete", "namespace", name, "--wait=false")
