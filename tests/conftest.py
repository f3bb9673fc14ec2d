"""Fixtures shared by every test: one real control plane per session, a namespace per test.

The control plane is real (etcd, kube-apiserver, kube-controller-manager built from the
Kubernetes sources by testbed/build.sh); tests never talk to a mock of the API. Binaries are
built on first use, with the build's progress shown even under pytest's output capture.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lbtrain.kube import NAMESPACES, SERVICEACCOUNTS, KubeClient, NotFound, load_config
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed.binaries import ensure_binaries, repo_root
from lbtrain_dev.testbed.fake_kubelet import FakeKubelet
from lbtrain_dev.testbed.s3server import ensure_s3_binary

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = repo_root()


@pytest.fixture(scope="session")
def testbed_bin(request: pytest.FixtureRequest) -> Path:
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        return ensure_binaries()


@pytest.fixture(scope="session")
def s3_binary(request: pytest.FixtureRequest) -> Path:
    """versitygw, the real S3-compatible server (testbed/build-s3.sh), built on first use."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        return ensure_s3_binary()


@pytest.fixture(scope="session")
def control_plane(testbed_bin: Path) -> Iterator[ControlPlane]:
    with tempfile.TemporaryDirectory(prefix="lbtrain-testbed-") as run_dir:
        plane = ControlPlane(testbed_bin, Path(run_dir))
        plane.start(die_with_parent=True)
        try:
            yield plane
        finally:
            plane.stop()


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane):
    """Run kubectl against the testbed as the admin; returns CompletedProcess (never raises)."""
    return control_plane.kubectl


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> None:
    """The lbtrain CRDs, installed and Established once per session."""
    control_plane.install_crds(REPO / "crds")


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[KubeClient]:
    async with KubeClient(load_config(str(control_plane.kubeconfig))) as client:
        yield client


@pytest.fixture
async def namespace(kube: KubeClient) -> AsyncIterator[str]:
    """A fresh namespace per test, with its default ServiceAccount (pods need it); deleted after."""
    name = f"t-{secrets.token_hex(4)}"
    await kube.create(
        NAMESPACES, {"metadata": {"name": name, "labels": {"lbtrain.io/test": "true"}}}
    )
    await kube.wait_for(SERVICEACCOUNTS, "default", name, lambda _: True, timeout=30)
    yield name
    with contextlib.suppress(NotFound):
        await kube.delete(NAMESPACES, name)


@pytest.fixture
def kubelet(kube: KubeClient, namespace: str) -> FakeKubelet:
    return FakeKubelet(kube, namespace)
