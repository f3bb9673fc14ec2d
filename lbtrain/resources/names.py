"""API group, versions, labels, annotations and finalizer names, defined once."""

from __future__ import annotations

import re
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
LABEL_TASK: Final = f"{API_GROUP}/task"
LABEL_TEMPLATE: Final = f"{API_GROUP}/template"

# Annotations the operator puts on a Job: what it was built from, and what `podstate` applies.
ANNOTATION_MODEL_RUN_ID: Final = f"{API_GROUP}/model-run-id"
ANNOTATION_TEMPLATE: Final = f"{API_GROUP}/template"
ANNOTATION_TEMPLATE_GENERATION: Final = f"{API_GROUP}/template-generation"
ANNOTATION_IMAGE_PULL_GRACE: Final = f"{API_GROUP}/image-pull-grace-seconds"
ANNOTATION_VOLUME_GRACE: Final = f"{API_GROUP}/volume-grace-seconds"
# On a run's artifacts claim: the uid of the ModelRun it was made for, so a retained claim (no
# owner) of an earlier run of the same name is told apart from this run's own.
ANNOTATION_MODEL_RUN_UID: Final = f"{API_GROUP}/model-run-uid"

# --- label values -----------------------------------------------------------------------------
# A label value: at most 63 characters of [A-Za-z0-9_.-], alphanumeric at both ends, or empty.
MAX_LABEL_VALUE: Final = 63
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_NOT_LABEL = re.compile(r"[^-A-Za-z0-9_.]+")
_UNTRIMMED_ENDS = re.compile(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$")


def is_label_value(value: str) -> bool:
    return len(value) <= MAX_LABEL_VALUE and _LABEL_VALUE.fullmatch(value) is not None


def label_value(value: str) -> str:
    """`value` when it is a valid label value, else a sanitised form for grouping and selecting
    (runs of other characters become one `_`: "My  model" -> "My_model"); may be empty, and the
    caller then leaves the label out. The exact value always lives in the spec or an annotation.

    The webhook labels the ModelRun and the operator labels its Job and pods with this one
    function, so `-l lbtrain.io/model-type=...` selects both alike."""
    if is_label_value(value):
        return value
    cleaned = _NOT_LABEL.sub("_", value)[:MAX_LABEL_VALUE]
    return _UNTRIMMED_ENDS.sub("", cleaned)
