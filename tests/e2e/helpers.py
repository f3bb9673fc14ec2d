"""Helpers shared by the real-node suites (a module of its own: conftest is not importable)."""

from __future__ import annotations

from typing import Any

from lbtrain_dev.images import ImageSet


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
