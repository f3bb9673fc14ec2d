"""The Job a ModelRun runs as: a pure function of the run, its template and the settings.

Each stage is a container (`export` and `prepare` as init containers, `train` as the main one)
sharing an emptyDir workspace, so the pod's own status says which stage runs. The
podFailurePolicy encodes the failure taxonomy Kubernetes can enforce by itself: disruptions
(eviction, preemption) never count against backoffLimit, and the trainer's "bad input" exit code
fails the Job at once, since retrying cannot fix data.

A run of several processes runs `train` under torchrun, and a run of several pods is an
Indexed Job: `scale` says what each adds, and a run of one process keeps exactly this Job.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from lbtrain import contract, destination
from lbtrain.resources.catalogue import task_for
from lbtrain.resources.models import ModelRun, TrainingTemplate
from lbtrain.resources.names import (
    ANNOTATION_IMAGE_PULL_GRACE,
    ANNOTATION_MODEL_RUN_ID,
    ANNOTATION_TEMPLATE,
    ANNOTATION_TEMPLATE_GENERATION,
    ANNOTATION_VOLUME_GRACE,
    LABEL_MANAGED_BY,
    LABEL_MODEL_RUN,
    LABEL_MODEL_TYPE,
    LABEL_TASK,
    LABEL_TEMPLATE,
    MANAGED_BY,
    label_value,
)
from lbtrain_operator import owners, storage
from lbtrain_operator import reasons as r
from lbtrain_operator import scale as sc
from lbtrain_operator.settings import Settings

WORKSPACE_VOLUME = "workspace"
TMP_VOLUME = "tmp"


def job_name(run_name: str) -> str:
    """Deterministic, so a restarted operator finds the Job instead of making a second one."""
    name = f"{run_name}-train"
    if len(name) <= 52:  # leaves room for the pod suffix within the 63-character label limit
        return name
    digest = hashlib.sha256(run_name.encode()).hexdigest()[:8]
    return f"{run_name[:37].rstrip('-.')}-{digest}-train"


def task(template: TrainingTemplate) -> str:
    """What the trainer trains for this template (`catalogue.task_for`)."""
    return task_for(template.spec.model_type, template.spec.task)


def hyperparameters(run: ModelRun, template: TrainingTemplate) -> dict[str, Any]:
    """Template defaults overridden by the run's own; Labelbox's config overrides both later."""
    return {**template.spec.hyperparameters, **run.spec.hyperparameters}


def _env(run: ModelRun, template: TrainingTemplate, settings: Settings) -> list[dict[str, Any]]:
    spec, tspec = run.spec, template.spec
    secret = tspec.labelbox.api_key_secret_ref
    secret_name = secret.name if secret else settings.api_key_secret_name
    secret_key = secret.key if secret else settings.api_key_secret_key
    artifacts = destination.expand(storage.destination_template(template), spec.model_run_id)
    values = {
        contract.ENV_MODEL_RUN_ID: spec.model_run_id,
        contract.ENV_MODEL_TYPE: task(template),
        contract.ENV_MODEL_ID: spec.model_id or "",
        contract.ENV_ORGANIZATION_ID: spec.organization_id or "",
        contract.ENV_LABELBOX_ENDPOINT: tspec.labelbox.endpoint or settings.labelbox_endpoint,
        contract.ENV_LABELBOX_REST_ENDPOINT: tspec.labelbox.rest_endpoint
        or settings.labelbox_rest_endpoint,
        contract.ENV_WORKSPACE: contract.DEFAULT_WORKSPACE,
        contract.ENV_ARTIFACTS: artifacts.destination,
        contract.ENV_ARTIFACTS_ROOT: artifacts.root,
        contract.ENV_HYPERPARAMETERS: json.dumps(hyperparameters(run, template), sort_keys=True),
        contract.ENV_TERMINATION_MESSAGE_PATH: contract.DEFAULT_TERMINATION_MESSAGE_PATH,
        "HF_HUB_OFFLINE": "1",
    }
    if tspec.pretrained:
        values[contract.ENV_PRETRAINED] = tspec.pretrained
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values.items()]
    env.append(
        {
            "name": contract.ENV_LABELBOX_API_KEY,
            "valueFrom": {"secretKeyRef": {"name": secret_name, "key": secret_key}},
        }
    )
    env += [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    return env + list(tspec.env)


PROGRESS_TOKEN_VOLUME = "lbtrain-progress-token"


def progress_wiring(
    template: TrainingTemplate, settings: Settings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(env, volumes, mounts) that let the train stage report live progress (docs/progress.md):
    where to POST, how often at most, and a projected service-account token for the progress
    audience only, short-lived and bound to the pod. It gives the pod no Kubernetes API
    rights (the default token stays unmounted); none of it without a progress URL."""
    if not settings.progress_url:
        return [], [], []
    env = [
        {"name": contract.ENV_PROGRESS_URL, "value": settings.progress_url},
        {"name": contract.ENV_PROGRESS_TOKEN_FILE, "value": contract.PROGRESS_TOKEN_FILE},
        {
            "name": contract.ENV_PROGRESS_INTERVAL_S,
            "value": str(template.spec.progress_interval_seconds),
        },
    ]
    token = {
        "audience": contract.PROGRESS_AUDIENCE,
        "expirationSeconds": contract.PROGRESS_TOKEN_EXPIRY_S,
        "path": contract.PROGRESS_TOKEN_FILE.rsplit("/", 1)[1],
    }
    volume = {
        "name": PROGRESS_TOKEN_VOLUME,
        "projected": {"sources": [{"serviceAccountToken": token}]},
    }
    mount = {
        "name": PROGRESS_TOKEN_VOLUME,
        "mountPath": contract.PROGRESS_TOKEN_DIR,
        "readOnly": True,
    }
    return env, [volume], [mount]


def artifacts_destination(job: dict[str, Any]) -> str:
    """The expanded artifact destination a built Job gives its trainer."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    return str(next(e["value"] for e in container["env"] if e["name"] == contract.ENV_ARTIFACTS))


def _security_context(template: TrainingTemplate, settings: Settings) -> dict[str, Any] | None:
    if template.spec.security_context is not None:
        return template.spec.security_context
    if not settings.restricted_pods:
        return None
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container(
    stage: str,
    template: TrainingTemplate,
    settings: Settings,
    env: list[dict[str, Any]],
    gpu: bool,
    mounts: list[dict[str, Any]],
    command: list[str] | None = None,
) -> dict[str, Any]:
    tspec = template.spec
    limits = dict(tspec.resources.limits)
    requests = dict(tspec.resources.requests)
    if tspec.workspace.size_limit is not None and not tspec.workspace.medium:
        # The scheduler places the pod only where its workspace fits on the node's disk. Each
        # stage runs alone (init containers one by one), so the pod asks for one workspace.
        requests.setdefault("ephemeral-storage", tspec.workspace.size_limit)
    if gpu and tspec.gpus > 0:
        # Extended resources need requests == limits; only the train stage holds the GPUs.
        limits[tspec.gpu_resource_name] = tspec.gpus
        requests[tspec.gpu_resource_name] = tspec.gpus
    container: dict[str, Any] = {
        "name": stage,
        "image": tspec.image,
        "imagePullPolicy": tspec.image_pull_policy,
        "command": command or [*tspec.command, stage],
        "env": env,
        "resources": {k: v for k, v in (("limits", limits), ("requests", requests)) if v},
        "volumeMounts": [
            {"name": WORKSPACE_VOLUME, "mountPath": contract.DEFAULT_WORKSPACE},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
            *mounts,
            *tspec.volume_mounts,
        ],
        "terminationMessagePath": contract.DEFAULT_TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    security = _security_context(template, settings)
    if security is not None:
        container["securityContext"] = security
    return container


def _pod_security_context(template: TrainingTemplate, settings: Settings) -> dict[str, Any]:
    # OnRootMismatch: the kubelet changes a volume's group only when its root is not the pod's
    # fsGroup already, instead of walking every file of a claim full of checkpoints on each
    # mount (minutes for a large one).
    if template.spec.pod_security_context is not None:
        return {"fsGroupChangePolicy": "OnRootMismatch", **template.spec.pod_security_context}
    if not settings.restricted_pods:
        return {"fsGroupChangePolicy": "OnRootMismatch"}
    return {  # the trainer image's own user (images/trainer/Dockerfile)
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def build_job(
    run: ModelRun, run_uid: str, template: TrainingTemplate, settings: Settings
) -> dict[str, Any]:
    """The complete batch/v1 Job body for `run`, owned by it.

    Raises `lbtrain.destination.DestinationEscapes` when the run's artifact destination would
    leave the template's root: no Job is built for it. A template with a claim template mounts
    the run's claim (`storage`), which the pass creates before this Job.
    """
    tspec, name = template.spec, run.metadata.name
    wanted = {
        LABEL_MODEL_RUN: name,
        LABEL_MODEL_TYPE: label_value(run.spec.model_type),
        LABEL_TASK: label_value(task(template)),
        LABEL_TEMPLATE: template.metadata.name,
        LABEL_MANAGED_BY: MANAGED_BY,
    }
    labels = {k: v for k, v in wanted.items() if v}  # an empty value: the label is left out
    annotations = {
        ANNOTATION_MODEL_RUN_ID: run.spec.model_run_id,
        ANNOTATION_TEMPLATE: template.metadata.name,
        ANNOTATION_TEMPLATE_GENERATION: str(template.metadata.generation or 0),
        ANNOTATION_IMAGE_PULL_GRACE: str(tspec.image_pull_grace_period_seconds),
        ANNOTATION_VOLUME_GRACE: str(tspec.volume_grace_period_seconds),
    }
    scale = sc.scale_of(run, template)
    env = _env(run, template, settings)  # the same for every stage
    env += sc.stage_env(scale, run_uid)  # export once per multi-pod run
    progress_env, progress_volumes, progress_mounts = progress_wiring(template, settings)
    # torchrun's variables and the progress channel are for train alone
    train_env = env + sc.launcher_env(scale, job_name(name)) + progress_env
    train_command = sc.train_command(tspec.command, scale)
    volumes, mounts = storage.pod_storage(name, template)
    workspace: dict[str, Any] = {}
    if tspec.workspace.size_limit is not None:
        workspace["sizeLimit"] = tspec.workspace.size_limit
    if tspec.workspace.medium:
        workspace["medium"] = tspec.workspace.medium
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # required by podFailurePolicy; the Job retries whole pods
        "automountServiceAccountToken": False,  # the trainer never calls the Kubernetes API
        "initContainers": [
            _container(contract.STAGE_EXPORT, template, settings, env, False, mounts),
            _container(contract.STAGE_PREPARE, template, settings, env, False, mounts),
        ],
        "containers": [
            _container(
                contract.STAGE_TRAIN,
                template,
                settings,
                train_env,
                True,
                mounts + progress_mounts,
                train_command,
            ),
        ],
        "volumes": [
            {"name": WORKSPACE_VOLUME, "emptyDir": workspace},
            {"name": TMP_VOLUME, "emptyDir": {}},
            *volumes,
            *progress_volumes,
            *tspec.volumes,
        ],
        "securityContext": _pod_security_context(template, settings),
    }
    optional = {
        "nodeSelector": tspec.node_selector or None,
        "tolerations": tspec.tolerations or None,
        "affinity": tspec.affinity,
        "priorityClassName": tspec.priority_class_name,
        "serviceAccountName": tspec.service_account_name,
        "imagePullSecrets": tspec.image_pull_secrets or None,
    }
    pod_spec.update({k: v for k, v in optional.items() if v})
    backoff = run.spec.backoff_limit if run.spec.backoff_limit is not None else tspec.backoff_limit
    deadline = run.spec.active_deadline_seconds or tspec.active_deadline_seconds
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name),
            "namespace": run.metadata.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owners.run_reference(name, run_uid)],
        },
        "spec": {
            "backoffLimit": backoff,
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": tspec.ttl_seconds_after_finished,
            "podFailurePolicy": {
                "rules": [
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                    {
                        "action": "FailJob",
                        "onExitCodes": {"operator": "In", "values": sorted(r.PERMANENT_EXITS)},
                    },
                ]
            },
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }
    return sc.indexed(job, scale)
