"""Fixtures for the end-to-end suites: the testbed with a real node, and the two images on it.

One node per machine and per session: containerd, kubelet, kube-scheduler and kube-proxy join a
control plane of their own (the API server listens on the node's bridge address, so pods reach
it through the `kubernetes` Service). The images are the ones `make images` builds, imported
into the node's containerd; nothing is ever pulled.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.images import ImageSet, ensure_images
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed import nodeconfig as nc
from lbtrain_dev.testbed.cli import default_node_store
from lbtrain_dev.testbed.node import import_image, leftovers
from lbtrain_dev.testbed.s3server import S3Server, s3_server

from .helpers import BUCKET


@pytest.fixture(scope="session")
def images(request: pytest.FixtureRequest) -> ImageSet:
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        return ensure_images()


# Module scope: the machine has one node, and `lbtrain demo --real-node` (tests/e2e/test_demo.py)
# starts its own, so this one must be gone once its module is done, whatever the test order.
@pytest.fixture(scope="module")
def real_node(testbed_bin: Path, images: ImageSet) -> Iterator[ControlPlane]:
    """A control plane with a real node, both images imported. On teardown, `down` must leave
    no process, mount, bridge or kube-proxy chain behind: that is asserted here."""
    store = default_node_store()
    with tempfile.TemporaryDirectory(prefix="lbtrain-node-") as run_dir:
        plane = ControlPlane(testbed_bin, Path(run_dir), node_store=store)
        plane.start(die_with_parent=True, timeout=180)
        try:
            for image in (images.lbtrain, images.trainer):
                import_image(plane.node_paths, image.archive, image.ref)
            yield plane
        finally:
            plane.stop()
        left = leftovers(Path(run_dir), store)
        assert not left, f"testbed down left behind: {left}"


@pytest.fixture(scope="module")
def labelbox() -> Iterator[FakeLabelbox]:
    """A fake Labelbox the node's pods reach (it listens on the node's bridge address). A module
    that needs an API key of its own defines its own `labelbox`."""
    with FakeLabelbox.in_thread(api_key="lb-api-key-e2e", host=nc.node_ip()) as fake:
        yield fake


@pytest.fixture(scope="module")
def s3(real_node: ControlPlane, s3_binary: Path) -> Iterator[S3Server]:
    """A real S3 server (versitygw) with BUCKET, where pods reach it. After the node is up: the
    bridge address exists only then."""
    with s3_server([BUCKET], host=nc.node_ip(), binary=s3_binary) as server:
        yield server
