"""Helpers shared by the real-node suites (a module of its own: conftest is not importable)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.images import ImageSet
from lbtrain_dev.testbed import ControlPlane

from ..helm.helpers import CHART, Helm, set_args


def imported_image_values(images: ImageSet) -> dict[str, Any]:
    """Chart values naming the images as `ctr import` put them on the node (`localhost/...`):
    both repositories set, so no `imageRegistry` is needed and nothing is pulled. The install
    from a registry, as a user does it, is tests/e2e/test_real_node.py's."""
    repo, tag = images.lbtrain.ref.rsplit(":", 1)
    trainer_repo, trainer_tag = images.trainer.ref.rsplit(":", 1)
    return {
        "image.repository": repo,
        "image.tag": tag,
        "trainingTemplates.defaults.image.repository": trainer_repo,
        "trainingTemplates.defaults.image.tag": trainer_tag,
    }


def install_lbtrain(
    plane: ControlPlane,
    images: ImageSet,
    labelbox: FakeLabelbox,
    helm_home: Path,
    namespace: str,
    values: dict[str, Any],
) -> Helm:
    """The chart installed (and ready) in a new `namespace`, with the node's imported images, the
    fake Labelbox as its Labelbox, and `values` (dotted keys) on top; answers the Helm to
    uninstall it with."""
    plane.kubectl("create", "namespace", namespace, check=True)
    helm = Helm(plane.bin_dir / "helm", helm_home, plane.kubeconfig)
    base = {
        **imported_image_values(images),
        "labelbox.endpoint": labelbox.endpoint,
        "labelbox.restEndpoint": labelbox.rest_endpoint,
        "labelbox.apiKey": labelbox.api_key,
    }
    result = helm(
        "install", "lbtrain", str(CHART), f"--namespace={namespace}", "--wait", "--timeout=5m",
        *set_args({**base, **values}), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return helm
