"""Where a run's weights are kept, decided as pure functions: its own PersistentVolumeClaim, a
volume the template mounts, the pod's workspace, or an object store.

Why a claim per run: one claim shared by all runs must be ReadWriteMany to serve pods on
several nodes at once. With the ReadWriteOnce claims most clusters provision by default, the
second run scheduled on another node waits on a Multi-Attach error for as long as the first
one trains. A template's `artifacts.volumeClaimTemplate` gives every run its own claim,
`<run>-artifacts`, created before the Job, so it attaches wherever that run's pod lands.
`retention: Delete` (the default) makes the ModelRun the claim's owner, so deleting the run
deletes its weights; `Retain` leaves the claim without an owner.

A claim of that name that was made for another run is never reused (it would hand one run's
weights to another): each claim records the uid of the ModelRun it was made for
(`ANNOTATION_MODEL_RUN_UID`), and only that run may mount it. That is also what makes the
claim's creation idempotent: an operator restarted between the claim and the Job finds the
claim, sees it is the run's own, and goes on.

Without a claim, the default destination is under the pod's workspace (an emptyDir): it is
writable, but it goes with the pod. A local destination that no writable mount of the pod
covers would fail at the first checkpoint, hours into training, on a read-only root
filesystem; it is refused before any Job. Object-store URIs pass through untouched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from lbtrain import contract
from lbtrain.destination import PLACEHOLDER
from lbtrain.resources.models import ModelRun, Retention, TrainingTemplate
from lbtrain.resources.names import (
    ANNOTATION_MODEL_RUN_ID,
    ANNOTATION_MODEL_RUN_UID,
    LABEL_MANAGED_BY,
    LABEL_MODEL_RUN,
    MANAGED_BY,
    is_label_value,
)
from lbtrain_operator import owners

CLAIM_SUFFIX: Final = "-artifacts"
CLAIM_VOLUME: Final = "run-artifacts"
SHM_VOLUME: Final = "dshm"
SHM_PATH: Final = "/dev/shm"
TMP_PATH: Final = "/tmp"
WORKSPACE_DESTINATION: Final = f"{contract.DEFAULT_WORKSPACE}/artifacts/{PLACEHOLDER}"
MAX_NAME: Final = 253  # a PersistentVolumeClaim's name is a DNS subdomain


def claim_name(run_name: str) -> str:
    """`<run>-artifacts`: deterministic, so a restarted operator finds the claim it made."""
    name = f"{run_name}{CLAIM_SUFFIX}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(run_name.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(CLAIM_SUFFIX) - len(digest) - 1
    return f"{run_name[:keep].rstrip('-.')}-{digest}{CLAIM_SUFFIX}"


def has_claim(template: TrainingTemplate) -> bool:
    return template.spec.artifacts.volume_claim_template is not None


def destination_template(template: TrainingTemplate) -> str:
    """The template's destination, or the default: under the claim's mount when the template
    has a claim, else under the workspace (lost with the pod)."""
    artifacts = template.spec.artifacts
    if artifacts.destination:
        return artifacts.destination
    if has_claim(template):
        return f"{artifacts.mount_path.rstrip('/')}/{PLACEHOLDER}"
    return WORKSPACE_DESTINATION


def build_claim(run: ModelRun, run_uid: str, template: TrainingTemplate) -> dict[str, Any] | None:
    """The run's PersistentVolumeClaim, or None when its template has no claim template."""
    claim = template.spec.artifacts.volume_claim_template
    if claim is None:
        return None
    name = run.metadata.name
    labels = {**claim.metadata.labels, LABEL_MANAGED_BY: MANAGED_BY}
    if is_label_value(name):
        labels[LABEL_MODEL_RUN] = name
    annotations = {
        **claim.metadata.annotations,
        ANNOTATION_MODEL_RUN_UID: run_uid,
        ANNOTATION_MODEL_RUN_ID: run.spec.model_run_id,
    }
    metadata: dict[str, Any] = {
        "name": claim_name(name),
        "namespace": run.metadata.namespace,
        "labels": labels,
        "annotations": annotations,
    }
    if template.spec.artifacts.retention is Retention.DELETE:
        metadata["ownerReferences"] = [owners.run_reference(name, run_uid, controller=False)]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": dict(claim.spec),
    }


def claim_owner(existing: Mapping[str, Any], run_name: str, run_uid: str) -> str | None:
    """None when `existing` is this run's own claim (made by it, by an earlier operator);
    otherwise whom it belongs to, in words for the run's failure message."""
    meta = existing.get("metadata") or {}
    labels = meta.get("labels") or {}
    made_for = (meta.get("annotations") or {}).get(ANNOTATION_MODEL_RUN_UID)
    labelled = labels.get(LABEL_MODEL_RUN)
    other_owner = owners.other_owner(existing, run_uid)
    if made_for == run_uid and other_owner is None:
        if labelled and is_label_value(run_name) and labelled != run_name:
            return f"ModelRun {labelled} (its {LABEL_MODEL_RUN} label)"
        return None
    if other_owner is not None:
        return f"{other_owner.get('kind')} {other_owner.get('name')} (uid {other_owner.get('uid')})"
    if made_for:
        who = labelled or run_name
        return f"an earlier ModelRun {who} (uid {made_for}), which retained it"
    return "no ModelRun (lbtrain did not create it)"


def pod_storage(run_name: str, template: TrainingTemplate) -> tuple[list[Any], list[Any]]:
    """The volumes and mounts the operator adds to every run's pod: the run's claim at the
    template's mount path, and /dev/shm as memory (DataLoader workers pass tensors through it;
    a container's own /dev/shm is 64 MiB)."""
    tspec = template.spec
    volumes: list[Any] = []
    mounts: list[Any] = []
    if has_claim(template):
        claim = {"claimName": claim_name(run_name)}
        volumes.append({"name": CLAIM_VOLUME, "persistentVolumeClaim": claim})
        mounts.append({"name": CLAIM_VOLUME, "mountPath": tspec.artifacts.mount_path})
    own_shm = any(m.get("mountPath") == SHM_PATH for m in tspec.volume_mounts)
    if not own_shm:
        shm: dict[str, Any] = {"medium": "Memory"}
        if tspec.shm_size_limit not in (None, "", 0):
            shm["sizeLimit"] = tspec.shm_size_limit
        volumes.append({"name": SHM_VOLUME, "emptyDir": shm})
        mounts.append({"name": SHM_VOLUME, "mountPath": SHM_PATH})
    return volumes, mounts


def writable_mounts(template: TrainingTemplate) -> list[str]:
    """The mount paths of the pod a trainer can write to, in the order they are mounted."""
    paths = [contract.DEFAULT_WORKSPACE, TMP_PATH]
    if has_claim(template):
        paths.append(template.spec.artifacts.mount_path)
    for mount in template.spec.volume_mounts:
        path = mount.get("mountPath")
        if isinstance(path, str) and path and not mount.get("readOnly"):
            paths.append(path)
    return paths


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def local_path(destination: str) -> str | None:
    """The path of a local destination (a path or a file:// URI); None for an object store."""
    if destination.startswith("file://"):
        return destination.removeprefix("file://")
    return None if "://" in destination else destination


def unwritable(destination: str, template: TrainingTemplate) -> list[str] | None:
    """None when the run's (expanded) destination can be written; else the writable mounts,
    none of which covers it."""
    path = local_path(destination)
    if path is None:
        return None
    mounts = writable_mounts(template)
    segments = _segments(path)
    for mount in mounts:
        under = _segments(mount)
        if segments[: len(under)] == under and mount != SHM_PATH:
            return None
    return mounts
