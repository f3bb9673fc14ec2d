"""Small builders of the objects the operator reads: runs, templates, Jobs, pods in any state.

Pods are built from the same status builders the fake kubelet writes, so unit tests and
testbed tests see identical shapes.
"""

from __future__ import annotations

from typing import Any

from lbtrain.resources.models import ModelRun, TrainingTemplate
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed import fake_kubelet as fk

IMAGE = "127.0.0.1:1/lbtrain-trainer:test"


def run(
    name: str = "mr-1", model_type: str = "image_single_classification", **spec: Any
) -> ModelRun:
    return ModelRun.model_validate(
        {
            "metadata": {"name": name, "namespace": "ns", "uid": "uid-1"},
            "spec": {
                "modelRunId": fake_cuid("run-1"),
                "modelType": model_type,
                "modelId": fake_cuid("model1"),
                **spec,
            },
        }
    )


def template(model_type: str = "image_single_classification", **spec: Any) -> TrainingTemplate:
    return TrainingTemplate.model_validate(
        {
            "metadata": {"name": "image-single", "namespace": "ns"},
            "spec": {"modelType": model_type, "image": IMAGE, **spec},
        }
    )


def template_object(
    name: str,
    model_type: str = "image_single_classification",
    *,
    created: str = "2026-01-01T00:00:00Z",
    generation: int = 1,
    **spec: Any,
) -> dict[str, Any]:
    """A TrainingTemplate as the API server holds it (what admission and the catalogue read)."""
    return {
        "apiVersion": "lbtrain.io/v1alpha1",
        "kind": "TrainingTemplate",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "generation": generation,
            "creationTimestamp": created,
        },
        "spec": {"modelType": model_type, "image": IMAGE, **spec},
    }


def job(*conditions: tuple[str, str]) -> dict[str, Any]:
    """A Job with (type, reason) conditions set True."""
    return {
        "metadata": {"name": "mr-1-train", "annotations": {}},
        "spec": {"backoffLimit": 2, "activeDeadlineSeconds": 600},
        "status": {
            "conditions": [
                {"type": t, "status": "True", "reason": reason, "message": f"{t} {reason}"}
                for t, reason in conditions
            ]
        },
    }


def pod(
    name: str = "mr-1-train-abcde",
    *,
    phase: str = "Pending",
    created: str = "2026-01-01T00:00:00Z",
    start: str | None = "2026-01-01T00:00:00Z",
    node: str | None = "gpu-node-1",
    export: dict[str, Any] | None = None,
    prepare: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    **status: Any,
) -> dict[str, Any]:
    """A pod of the run; each stage's status defaults to waiting (PodInitializing)."""
    inits = [export or fk.waiting("export", IMAGE), prepare or fk.waiting("prepare", IMAGE)]
    body: dict[str, Any] = {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"nodeName": node} if node else {},
        "status": {
            "phase": phase,
            "initContainerStatuses": inits,
            "containerStatuses": [train or fk.waiting("train", IMAGE)],
            "conditions": conditions or [],
            **status,
        },
    }
    if start:
        body["status"]["startTime"] = start
    return body


def done(stage: str) -> dict[str, Any]:
    return fk.terminated(stage, IMAGE, 0)


def running(stage: str) -> dict[str, Any]:
    return fk.running(stage, IMAGE)
