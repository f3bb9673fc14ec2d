"""Helpers shared by the real-node suites (a module of its own: conftest is not importable)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lbtrain import contract
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.fake_labelbox.state import StatusUpdate
from lbtrain_dev.images import ImageSet
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed.s3server import S3Server

from ..helm.helpers import CHART, Helm, set_args

BUCKET = "runs"  # the bucket the `s3` fixture's server has
BUCKET_SECRET = "bucket-credentials"


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


def bucket_env(s3: S3Server) -> list[dict[str, Any]]:
    """What a template author writes for an S3 destination: the endpoint in clear, the keys
    from a Secret named BUCKET_SECRET in the run's namespace."""

    def from_secret(name: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": BUCKET_SECRET, "key": key}}}

    return [
        {"name": "AWS_ENDPOINT_URL", "value": s3.endpoint},
        {"name": "AWS_DEFAULT_REGION", "value": "us-east-1"},
        from_secret("AWS_ACCESS_KEY_ID", "access-key-id"),
        from_secret("AWS_SECRET_ACCESS_KEY", "secret-access-key"),
    ]


def bucket_secret(s3: S3Server, namespace: str) -> dict[str, Any]:
    """The Secret `bucket_env` reads the keys from."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": BUCKET_SECRET, "namespace": namespace},
        "stringData": {"access-key-id": s3.access_key, "secret-access-key": s3.secret_key},
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
