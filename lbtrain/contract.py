"""The contract between the operator and the trainer image, defined once.

The operator builds a pod whose containers run ``lbtrain trainer export|prepare|train``; the
trainer reads its inputs from these environment variables and reports through its exit code and
its termination message. Both sides import the names from here so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

# --- environment variables set on every trainer container -----------------------------------
ENV_MODEL_RUN_ID: Final = "LBTRAIN_MODEL_RUN_ID"
ENV_MODEL_TYPE: Final = "LBTRAIN_MODEL_TYPE"
ENV_MODEL_ID: Final = "LBTRAIN_MODEL_ID"
ENV_ORGANIZATION_ID: Final = "LBTRAIN_ORGANIZATION_ID"
ENV_LABELBOX_API_KEY: Final = "LABELBOX_API_KEY"
ENV_LABELBOX_ENDPOINT: Final = "LABELBOX_ENDPOINT"
ENV_LABELBOX_REST_ENDPOINT: Final = "LABELBOX_REST_ENDPOINT"
ENV_WORKSPACE: Final = "LBTRAIN_WORKSPACE"
ENV_ARTIFACTS: Final = "LBTRAIN_ARTIFACTS"
# The root the artifact destination must stay under (lbtrain.destination); the trainer checks
# it again before it writes.
ENV_ARTIFACTS_ROOT: Final = "LBTRAIN_ARTIFACTS_ROOT"
ENV_HYPERPARAMETERS: Final = "LBTRAIN_HYPERPARAMETERS"
ENV_TERMINATION_MESSAGE_PATH: Final = "LBTRAIN_TERMINATION_MESSAGE_PATH"
ENV_PRETRAINED: Final = "LBTRAIN_PRETRAINED"
ENV_ALLOW_HUB_DOWNLOAD: Final = "LBTRAIN_ALLOW_HUB_DOWNLOAD"
# Live training progress (docs/progress.md): where rank 0 POSTs its reports, the projected
# service-account token (audience PROGRESS_AUDIENCE) it sends as a bearer token, re-read from
# the file each time (the kubelet rotates it), and the least seconds between two reports (the
# template's `progressIntervalSeconds`). Unset URL: the trainer reports nothing.
ENV_PROGRESS_URL: Final = "LBTRAIN_PROGRESS_URL"
ENV_PROGRESS_TOKEN_FILE: Final = "LBTRAIN_PROGRESS_TOKEN_FILE"
ENV_PROGRESS_INTERVAL_S: Final = "LBTRAIN_PROGRESS_INTERVAL_SECONDS"
PROGRESS_AUDIENCE: Final = "lbtrain-progress"
PROGRESS_TOKEN_DIR: Final = "/var/run/secrets/lbtrain-progress"
PROGRESS_TOKEN_FILE: Final = PROGRESS_TOKEN_DIR + "/token"
# The shortest a projected token may live (the API server's floor is 10 minutes).
PROGRESS_TOKEN_EXPIRY_S: Final = 600
PROGRESS_PATH: Final = "/progress"
# The fields of one report, as the trainer sends them and the operator checks them.
PROGRESS_FIELDS: Final = (
    "modelRunId",
    "epoch",
    "epochs",
    "step",
    "steps",
    "trainLoss",
    "validationMetric",
    "validationValue",
    "examplesPerSecond",
    "etaSeconds",
    "measuredAt",
)
# Set by a template's `env`, never by the operator (so not reserved): `true` lets the trainer
# fetch media from loopback, link-local and cloud-metadata addresses, which it refuses by
# default (row data is written by any Labelbox user); the tests' and the demo's servers need it.
ENV_ALLOW_LOOPBACK_MEDIA: Final = "LBTRAIN_ALLOW_LOOPBACK_MEDIA"
# Set on every stage container of a run of several pods only: how many pods it has, and the
# ModelRun's uid. Pod index 0 exports and prepares once and publishes the result to the shared
# artifact destination, keyed by the uid (a retry of the same run reuses it, a new run does
# not); the other pods wait for it instead of calling Labelbox.
ENV_NUM_NODES: Final = "LBTRAIN_NUM_NODES"
ENV_RUN_UID: Final = "LBTRAIN_RUN_UID"
# Set by Kubernetes in every container (init containers too) of an Indexed Job's pod.
COMPLETION_INDEX_ENV: Final = "JOB_COMPLETION_INDEX"

# The variables the operator sets from the run and its template: a template's `env` may not set
# any of them (admission refuses it, naming the variable), since a later duplicate would win in
# Kubernetes and silently replace, say, the artifact destination the operator checked against
# its root. The launcher's variables (below) are reserved too, for the same reason.
RESERVED_ENV: Final = frozenset(
    {
        ENV_MODEL_RUN_ID,
        ENV_MODEL_TYPE,
        ENV_MODEL_ID,
        ENV_ORGANIZATION_ID,
        ENV_LABELBOX_API_KEY,
        ENV_LABELBOX_ENDPOINT,
        ENV_LABELBOX_REST_ENDPOINT,
        ENV_WORKSPACE,
        ENV_ARTIFACTS,
        ENV_ARTIFACTS_ROOT,
        ENV_HYPERPARAMETERS,
        ENV_TERMINATION_MESSAGE_PATH,
        ENV_PRETRAINED,
        ENV_NUM_NODES,
        ENV_RUN_UID,
        ENV_PROGRESS_URL,
        ENV_PROGRESS_TOKEN_FILE,
        ENV_PROGRESS_INTERVAL_S,
    }
)

# --- the launcher of multi-process training (torchrun) -----------------------------------------
# torchrun reads every flag from `PET_<FLAG>` (`torch/distributed/argparse_util.py`), the same
# contract Kubeflow Trainer's torch plugin uses, and hands each process its rank in the rest.
# The operator sets them from a template's `gpus`, `numProcPerNode` and `numNodes`; a template
# or an image that set its own would start ranks that disagree on the world they belong to.
LAUNCHER_ENV_PREFIX: Final = "PET_"
LAUNCHER_ENV: Final = frozenset(
    {
        "MASTER_ADDR",
        "MASTER_PORT",
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
    }
)
ENV_PET_NNODES: Final = "PET_NNODES"
ENV_PET_NPROC_PER_NODE: Final = "PET_NPROC_PER_NODE"
ENV_PET_NODE_RANK: Final = "PET_NODE_RANK"
ENV_PET_MASTER_ADDR: Final = "PET_MASTER_ADDR"
ENV_PET_MASTER_PORT: Final = "PET_MASTER_PORT"
ENV_PET_STANDALONE: Final = "PET_STANDALONE"
ENV_PET_RDZV_BACKEND: Final = "PET_RDZV_BACKEND"
ENV_PET_MAX_RESTARTS: Final = "PET_MAX_RESTARTS"
ENV_PET_NO_PYTHON: Final = "PET_NO_PYTHON"
# The launcher executable on the trainer image's PATH (custom images too).
LAUNCHER: Final = "torchrun"
# The port rank 0 listens on for the static rendezvous of a multi-pod run (Kubeflow's too).
RENDEZVOUS_PORT: Final = 29500


def is_launcher_env(name: str) -> bool:
    """Whether `name` is one of the launcher's variables (torchrun's `PET_*` flags and the
    ranks it hands each process)."""
    return name.startswith(LAUNCHER_ENV_PREFIX) or name in LAUNCHER_ENV


def reserved_env(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """The names a template's (or run's) `env` may not set, sorted: (the operator's contract
    variables, the launcher's). The one rule admission applies."""
    given = set(names)
    return sorted(given & RESERVED_ENV), sorted(n for n in given if is_launcher_env(n))


DEFAULT_LABELBOX_ENDPOINT: Final = "https://api.labelbox.com/graphql"
DEFAULT_LABELBOX_REST_ENDPOINT: Final = "https://api.labelbox.com/api/v1"
DEFAULT_WORKSPACE: Final = "/workspace"
DEFAULT_TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"

# --- stage containers, in the order they run in the pod ---------------------------------------
STAGE_EXPORT: Final = "export"
STAGE_PREPARE: Final = "prepare"
STAGE_TRAIN: Final = "train"
STAGES: Final = (STAGE_EXPORT, STAGE_PREPARE, STAGE_TRAIN)

# --- exit codes -------------------------------------------------------------------------------
EXIT_OK: Final = 0
# The data of the model run cannot train (no labels, a class with too few examples, broken
# media...). Retrying cannot help, so the Job's podFailurePolicy fails the run at once.
EXIT_BAD_INPUT: Final = 65  # sysexits EX_DATAERR
# The artifact destination would leave its root (lbtrain.destination): a template or run that
# must be fixed, so the run fails at once, with its own reason.
EXIT_DESTINATION_ESCAPES: Final = 77  # sysexits EX_NOPERM
# The artifact destination cannot be written: its fsspec backend is not installed, its bucket
# does not exist, or its credentials are refused. The trainer finds out with a probe before any
# expensive work; a template or Secret must be fixed, so the run fails at once, with its own
# reason. (An endpoint that does not answer is an outage: exit 1, retried.)
EXIT_DESTINATION_UNUSABLE: Final = 78  # sysexits EX_CONFIG
# Any other non-zero exit is treated as transient and retried up to the template's backoffLimit.

# Kubernetes truncates a termination message to 4096 bytes; the trainer keeps under it.
TERMINATION_MESSAGE_MAX_BYTES: Final = 4096

MODEL_TYPES: Final = (
    "bounding_box",
    "ner",
    "image_single_classification",
    "image_multi_classification",
    "text_single_classification",
    "text_multi_classification",
)
