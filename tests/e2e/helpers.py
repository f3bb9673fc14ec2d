"""Helpers shared by the real-node suites (a module of its own: conftest is not importable)."""

from __future__ import annotations

from typing import Any

from lbtrain import contract
from lbtrain_dev.fake_labelbox.state import StatusUpdate
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


def timeline(updates: list[StatusUpdate]) -> list[str]:
    """A run's Labelbox statuses with each repeat folded: a run that trains long enough also
    sends TRAINING_MODEL again with newer live progress (docs/progress.md)."""
    statuses = [u.status for u in updates]
    return [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]


def progress_of(update: StatusUpdate) -> dict[str, Any] | None:
    """The `progress` metadata of an update, nested or flattened (`progress.epoch`)."""
    meta = update.metadata or {}
    if isinstance(meta.get("progress"), dict):
        return dict(meta["progress"])
    flat = {k.removeprefix("progress."): v for k, v in meta.items() if k.startswith("progress.")}
    return flat or None


def check_progress(updates: list[StatusUpdate], at_least: int = 2) -> list[dict[str, Any]]:
    """Live progress at Labelbox: at least `at_least` distinct updates, in order, each on
    TRAINING_MODEL with every field, none with or after the final status; answers them."""
    told = [(i, p) for i, u in enumerate(updates) if (p := progress_of(u)) is not None]
    stamps = [p["measuredAt"] for _, p in told]
    assert len(set(stamps)) >= at_least, [u.status for u in updates]
    assert stamps == sorted(stamps), stamps
    fields = set(contract.PROGRESS_FIELDS) - {"modelRunId"}
    for i, p in told:
        assert updates[i].status == "TRAINING_MODEL", updates[i].status
        assert fields <= set(p), p
    final = next(i for i, u in enumerate(updates) if u.status in ("COMPLETE", "FAILED"))
    assert told[-1][0] < final
    return [p for _, p in told]
