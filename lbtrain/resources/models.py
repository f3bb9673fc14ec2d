"""Pydantic models of the custom resources, so handlers work with typed objects, not dicts.

The CRD schemas in crds/ are what the API server enforces; these models mirror them for the
code (camelCase on the wire, snake_case in Python) and tolerate fields they do not know, so an
operator one version behind a CRD does not crash on a new field.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        """The object as the API expects it: camelCase, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Phase(enum.StrEnum):
    PENDING = "Pending"
    EXPORTING = "Exporting"
    PREPARING = "Preparing"
    TRAINING = "Training"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class LabelboxStatus(enum.StrEnum):
    """The statuses `ModelRun.update_status` accepts, in the only order they may be shown."""

    EXPORTING_DATA = "EXPORTING_DATA"
    PREPARING_DATA = "PREPARING_DATA"
    TRAINING_MODEL = "TRAINING_MODEL"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"

    @property
    def rank(self) -> int:
        return _LB_ORDER.index(self) if self in _LB_ORDER else len(_LB_ORDER)

    @property
    def final(self) -> bool:
        return self in (LabelboxStatus.COMPLETE, LabelboxStatus.FAILED)


_LB_ORDER = [
    LabelboxStatus.EXPORTING_DATA,
    LabelboxStatus.PREPARING_DATA,
    LabelboxStatus.TRAINING_MODEL,
]


class TemplateRef(WireModel):
    """The TrainingTemplate a run was admitted with: its name, and the generation the webhook
    saw when Labelbox listed it (0: unknown)."""

    name: str
    generation: int = 0


class ModelRunSpec(WireModel):
    model_run_id: str
    model_type: str
    model_id: str | None = None
    organization_id: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    active_deadline_seconds: int | None = None
    backoff_limit: int | None = None
    num_nodes: int | None = Field(default=None, ge=1)  # overrides the template's numNodes
    template: TemplateRef | None = None


class SecretKeyRef(WireModel):
    name: str
    key: str = "api-key"


class LabelboxAccess(WireModel):
    api_key_secret_ref: SecretKeyRef | None = None
    endpoint: str | None = None
    rest_endpoint: str | None = None


class Workspace(WireModel):
    size_limit: str | int | None = None
    medium: str | None = None


class Retention(enum.StrEnum):
    """What happens to a run's artifacts claim when the ModelRun is deleted."""

    DELETE = "Delete"  # the claim is owned by the run and garbage-collected with it
    RETAIN = "Retain"  # the claim has no owner and outlives the run


class ClaimMetadata(WireModel):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class VolumeClaimTemplate(WireModel):
    """The PersistentVolumeClaim each run gets (`<run>-artifacts`): metadata and a core/v1
    PersistentVolumeClaimSpec, passed to the API server as written."""

    metadata: ClaimMetadata = Field(default_factory=ClaimMetadata)
    spec: dict[str, Any] = Field(default_factory=dict)


class Artifacts(WireModel):
    destination: str | None = None
    volume_claim_template: VolumeClaimTemplate | None = None
    retention: Retention = Retention.DELETE
    mount_path: str = "/artifacts"


class Resources(WireModel):
    requests: dict[str, str | int] = Field(default_factory=dict)
    limits: dict[str, str | int] = Field(default_factory=dict)


class TrainingTemplateSpec(WireModel):
    model_type: str  # the name Labelbox lists (see lbtrain.resources.catalogue)
    image: str
    task: str | None = None  # what the trainer trains; `catalogue.task_for` gives its default
    description: str = ""
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: list[dict[str, str]] = Field(default_factory=list)
    command: list[str] = Field(default_factory=lambda: ["lbtrain", "trainer"])
    gpus: int = 1
    gpu_resource_name: str = "nvidia.com/gpu"
    # Training processes per pod (torchrun's --nproc-per-node): with GPUs, one per GPU (unset,
    # or equal to `gpus`); without, as many as asked. More than one runs `train` under torchrun.
    num_proc_per_node: int | None = Field(default=None, ge=1)
    # Pods per run (torchrun's --nnodes): more than one makes the run an Indexed Job.
    num_nodes: int = Field(default=1, ge=1)
    resources: Resources = Field(default_factory=Resources)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = None
    service_account_name: str | None = None
    env: list[dict[str, Any]] = Field(default_factory=list)
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list)
    workspace: Workspace = Field(default_factory=Workspace)
    artifacts: Artifacts = Field(default_factory=Artifacts)
    pretrained: str | None = None
    labelbox: LabelboxAccess = Field(default_factory=LabelboxAccess)
    backoff_limit: int = 2
    active_deadline_seconds: int = 86400
    ttl_seconds_after_finished: int = 86400
    image_pull_grace_period_seconds: int = 300
    volume_grace_period_seconds: int = 600
    # Least seconds between two live progress reports of the trainer (docs/progress.md).
    progress_interval_seconds: int = 30
    shm_size_limit: str | int | None = "2Gi"
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    pod_security_context: dict[str, Any] | None = None
    security_context: dict[str, Any] | None = None


class ObjectMeta(WireModel):
    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class TrainingTemplate(WireModel):
    metadata: ObjectMeta
    spec: TrainingTemplateSpec


# The limits' defaults, defined once (by the template's fields): what a Job built before a
# field existed, or read without it, falls back to.
DEFAULT_BACKOFF_LIMIT: int = TrainingTemplateSpec.model_fields["backoff_limit"].default
DEFAULT_ACTIVE_DEADLINE_SECONDS: int = TrainingTemplateSpec.model_fields[
    "active_deadline_seconds"
].default
DEFAULT_IMAGE_PULL_GRACE_SECONDS: int = TrainingTemplateSpec.model_fields[
    "image_pull_grace_period_seconds"
].default

DEFAULT_VOLUME_GRACE_SECONDS: int = TrainingTemplateSpec.model_fields[
    "volume_grace_period_seconds"
].default


class ModelRun(WireModel):
    metadata: ObjectMeta
    spec: ModelRunSpec
