"""API group, versions, labels, annotations and finalizer names, defined once."""

from __future__ import annotations

from typing import Final

API_GROUP: Final = "lbtrain.io"
API_VERSION: Final = "v1alpha1"
GROUP_VERSION: Final = f"{API_GROUP}/{API_VERSION}"

# Labels put on Jobs and pods, so `kubectl get pods -l lbtrain.io/model-run=<name>` finds a run.
LABEL_MODEL_RUN: Final = f"{API_GROUP}/model-run"
LABEL_MODEL_TYPE: Final = f"{API_GROUP}/model-type"
LABEL_MODEL_RUN_ID: Final = f"{API_GROUP}/model-run-id"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "lbtrain"

FINALIZER: Final = f"{API_GROUP}/labelbox-final-status"
ANNOTATION_PREFIX: Final = f"operator.{API_GROUP}"
