"""Every reason the operator reports, each paired with its message template, defined once.

Reasons are CamelCase (they appear in `kubectl get mr`, in Events and in conditions); messages
are for people and may carry details with `str.format` fields. Labelbox's error_message is built
from the same pair, so a user reads the same words in Labelbox and in `kubectl describe`.
"""

from __future__ import annotations

from typing import Final

from lbtrain import contract

# --- waiting -------------------------------------------------------------------------------
JOB_CREATED: Final = "JobCreated"
MSG_JOB_CREATED: Final = (
    "created Job {job} from TrainingTemplate {template} (generation {generation})"
)
MSG_JOB_CREATED_ATTEMPT: Final = (
    "created Job {job} for attempt {attempt}; it resumes from the last checkpoint"
)
MSG_TEMPLATE_EDITED: Final = (
    "; the template was edited since Labelbox listed it (generation {listed})"
)
WAITING_FOR_POD: Final = "WaitingForPod"
MSG_WAITING_FOR_POD: Final = "the Job has no running pod yet"
CONTAINER_CREATING: Final = "ContainerCreating"
MSG_CONTAINER_CREATING: Final = "pod {pod} is scheduled on {node}; containers are starting"
UNSCHEDULABLE: Final = "Unschedulable"
MSG_UNSCHEDULABLE: Final = "pod {pod} cannot be scheduled: {detail}"
IMAGE_PULL_BACKOFF: Final = "ImagePullBackOff"
MSG_IMAGE_PULL_BACKOFF: Final = "cannot pull image {image} for {container}: {detail}"
RETRYING: Final = "Retrying"
MSG_RETRYING: Final = "attempt {attempt} failed ({detail}); the Job starts a new pod"
DISRUPTED: Final = "Disrupted"
MSG_DISRUPTED: Final = "pod {pod} was {how} ({detail}); retried without counting as a failure"
VOLUME_PENDING: Final = "VolumePending"
MSG_VOLUME_PENDING: Final = "pod {pod} is waiting for its volumes: {detail}"
CRASH_LOOP_BACKOFF: Final = "CrashLoopBackOff"
MSG_CRASH_LOOP_BACKOFF: Final = "container {container} keeps crashing: {detail}"
# Kueue holds the Job (suspended, its Workload not admitted): `queueing` says why, in Kueue's words.
QUEUED: Final = "Queued"
MSG_QUEUED: Final = "waiting in Kueue's LocalQueue {queue}: {detail}"
MSG_QUEUED_NO_WORKLOAD: Final = "Kueue has not queued the Job yet (no Workload for it)"
MSG_QUEUED_ADMITTED: Final = "Kueue admitted the Job; it is being started"
MSG_QUEUED_UNREADABLE: Final = (
    "cannot read Kueue's Workloads ({detail}); is Kueue installed, and the chart's "
    "kueue.enabled set?"
)
MSG_QUEUED_POSITION: Final = " (position {position} in the queue)"
MSG_QUEUED_EVICTED: Final = "evicted by Kueue ({reason}: {detail}) and queued again; "

# A run of several pods: one attempt is one Job; a failed one is retried as a whole.
MSG_WORKER_FAILED: Final = "pod {pod} (index {index}) on node {node} failed: {detail}"
MSG_ATTEMPT_RETRYING: Final = (
    "attempt {attempt} failed: {detail}; attempt {next} resumes from the last checkpoint "
    "({left} of backoffLimit {limit} retries left)"
)
MSG_ATTEMPT_DISRUPTED: Final = (
    "attempt {attempt} was disrupted: {detail}; attempt {next} resumes from the last "
    "checkpoint (a disruption is not counted as a failure)"
)
MSG_ATTEMPTS_EXHAUSTED: Final = (
    "attempt {attempt} failed: {detail}; no retries are left (backoffLimit {limit})"
)

# --- running -------------------------------------------------------------------------------
STAGE_RUNNING: Final = "StageRunning"
MSG_STAGE_RUNNING: Final = "{stage} is running in pod {pod} on {node}"

MSG_WORKERS_RUNNING: Final = "{stage} is running in {up}/{wanted} pods of Job {job}"

COMPLETING: Final = "Completing"
MSG_COMPLETING: Final = "the trainer finished; waiting for the Job to be marked Complete"
FAILING: Final = "Failing"
MSG_FAILING: Final = (
    "attempt {attempt} failed ({detail}); no retries are left (backoffLimit {limit}), "
    "waiting for the Job to be marked Failed"
)

# --- finished ------------------------------------------------------------------------------
SUCCEEDED: Final = "Succeeded"
MSG_SUCCEEDED: Final = "training finished; predictions and metrics were uploaded"
TEMPLATE_MISSING: Final = "TemplateMissing"
MSG_TEMPLATE_MISSING: Final = "no TrainingTemplate serves model type {model_type!r}; known: {known}"
MSG_TEMPLATE_DELETED: Final = (
    "TrainingTemplate {template}, which Labelbox listed as {model_type!r} when the run was "
    "created, no longer exists"
)
MSG_TEMPLATE_RENAMED: Final = (
    "TrainingTemplate {template}, which Labelbox listed as {model_type!r} when the run was "
    "created, now serves {now!r}"
)
RESERVED_ENVIRONMENT: Final = "ReservedEnvironment"
MSG_RESERVED_ENVIRONMENT: Final = (
    "TrainingTemplate {template} sets {names} in spec.env, which the operator sets for every "
    "run; remove it from the template (use its own field, e.g. artifacts.destination or "
    "labelbox.endpoint, where there is one)"
)
MSG_RESERVED_LAUNCHER_ENVIRONMENT: Final = (
    "TrainingTemplate {template} sets {names} in spec.env, which torchrun reads or sets for "
    "each training process; the operator sets them from spec.gpus, spec.numProcPerNode and "
    "spec.numNodes, so remove them from the template and use those fields"
)
INVALID_SCALE: Final = "InvalidScale"
MSG_PROCESSES_NOT_GPUS: Final = (
    "TrainingTemplate {template} asks for {procs} processes per pod (spec.numProcPerNode) on "
    "{gpus} GPUs (spec.gpus); each process trains on one GPU, so leave numProcPerNode unset or "
    "set it to {gpus}"
)
ARTIFACT_DESTINATION_NOT_SHARED: Final = "ArtifactDestinationNotShared"
MSG_ARTIFACT_DESTINATION_NOT_SHARED: Final = (
    "the run trains on {nodes} pods (numNodes), but its artifact destination {destination} "
    "{why}; every pod must reach the checkpoint rank 0 writes, so use a destination all pods "
    "share (an object store such as s3://bucket/runs/{{modelRunId}}, or a ReadWriteMany claim: "
    "artifacts.volumeClaimTemplate with accessModes [ReadWriteMany]), or train on one pod"
)
MSG_NOT_SHARED_POD_LOCAL: Final = "lies in the pod's own filesystem (lost with the pod)"
MSG_NOT_SHARED_CLAIM: Final = (
    "is on the run's claim, which is not ReadWriteMany (accessModes: {modes}), so pods on "
    "other nodes cannot mount it"
)
MSG_NOT_SHARED_VOLUME: Final = (
    "is on the template's volume {volume} ({kind}), which pods on other nodes do not share"
)
INVALID_TEMPLATE: Final = "InvalidTemplate"
MSG_INVALID_TEMPLATE: Final = "TrainingTemplate {template} cannot build a Job: {detail}"
ARTIFACT_DESTINATION_ESCAPES: Final = "ArtifactDestinationEscapes"
MSG_ARTIFACT_DESTINATION_ESCAPES: Final = (
    "{detail}; the run would write outside its own artifact folder, so it was not started "
    "(fix the template's artifacts.destination)"
)
ARTIFACT_DESTINATION_UNUSABLE: Final = "ArtifactDestinationUnusable"
MSG_ARTIFACT_DESTINATION_UNUSABLE: Final = (
    "{detail}; the trainer cannot write the run's weights there (fix the template's "
    "artifacts.destination, its object-store backend or the credentials in its env/envFrom)"
)
ARTIFACT_DESTINATION_NOT_WRITABLE: Final = "ArtifactDestinationNotWritable"
MSG_ARTIFACT_DESTINATION_NOT_WRITABLE: Final = (
    "artifact destination {destination!r} is on no writable mount of the pod (writable: "
    "{mounts}); the weights could not be saved, so the run was not started (set the "
    "template's artifacts.volumeClaimTemplate, mount a volume there, or use an object-store "
    "destination)"
)
ARTIFACT_CLAIM_TAKEN: Final = "ArtifactClaimTaken"
MSG_ARTIFACT_CLAIM_TAKEN: Final = (
    "PersistentVolumeClaim {claim} already exists and belongs to {owner}; it is never reused "
    "for another run (delete it, or rename the ModelRun)"
)
ARTIFACT_CLAIM_REJECTED: Final = "ArtifactClaimRejected"
MSG_ARTIFACT_CLAIM_REJECTED: Final = (
    "the API server refused the artifacts claim {claim}: {detail} (fix the template's "
    "artifacts.volumeClaimTemplate)"
)
JOB_REJECTED: Final = "JobRejected"
MSG_JOB_REJECTED: Final = "the API server refused the Job: {detail}"
MSG_SERVICE_REJECTED: Final = "the API server refused the run's Service {service}: {detail}"
IMAGE_PULL_FAILED: Final = "ImagePullFailed"
MSG_IMAGE_PULL_FAILED: Final = (
    "cannot pull image {image} for {container} after {seconds}s: {detail}"
)
VOLUME_FAILED: Final = "VolumeFailed"
MSG_VOLUME_FAILED: Final = "pod {pod} could not mount its volumes within {seconds}s: {detail}"
CONTAINER_CONFIG_ERROR: Final = "ContainerConfigError"
MSG_CONTAINER_CONFIG_ERROR: Final = "container {container} cannot start: {detail}"
OOM_KILLED: Final = "OOMKilled"
MSG_OOM_KILLED: Final = (
    "the {container} container ran out of memory (OOMKilled, exit {exit_code}); "
    "raise the template's memory limit or lower the batch size"
)
BAD_INPUT: Final = "BadInput"
MSG_BAD_INPUT: Final = "the data cannot train: {detail}"
DEADLINE_EXCEEDED: Final = "DeadlineExceeded"
MSG_DEADLINE_EXCEEDED: Final = "the run exceeded its deadline of {seconds}s"
BACKOFF_LIMIT_EXCEEDED: Final = "BackoffLimitExceeded"
MSG_BACKOFF_LIMIT_EXCEEDED: Final = (
    "failed {attempts} time(s), the template allows {limit} retries: {detail}"
)
JOB_FAILED: Final = "JobFailed"
MSG_JOB_FAILED: Final = "the Job failed: {detail}"
JOB_DELETED: Final = "JobDeleted"
MSG_JOB_DELETED: Final = "the Job {job} was deleted before it finished"
CANCELLED: Final = "Cancelled"
MSG_CANCELLED: Final = "cancelled: the ModelRun was deleted before training finished"

# Trainer exit codes that retrying cannot fix, each with the reason and message it ends the run
# with: the Job's podFailurePolicy fails the Job on them at once (`jobspec`), and the run is
# Failed as soon as its pod is, without waiting for the Job controller (`podstate`).
PERMANENT_EXITS: Final = {
    contract.EXIT_BAD_INPUT: (BAD_INPUT, MSG_BAD_INPUT),
    contract.EXIT_DESTINATION_ESCAPES: (
        ARTIFACT_DESTINATION_ESCAPES,
        MSG_ARTIFACT_DESTINATION_ESCAPES,
    ),
    contract.EXIT_DESTINATION_UNUSABLE: (
        ARTIFACT_DESTINATION_UNUSABLE,
        MSG_ARTIFACT_DESTINATION_UNUSABLE,
    ),
}

# --- Labelbox reporting -----------------------------------------------------------------------
LABELBOX_MODEL_RUN_NOT_FOUND: Final = "LabelboxModelRunNotFound"
MSG_LABELBOX_MODEL_RUN_NOT_FOUND: Final = (
    "{detail}; training goes on, and the report is retried with backoff"
)
LABELBOX_METADATA_REJECTED: Final = "LabelboxMetadataRejected"
MSG_LABELBOX_METADATA_REJECTED: Final = (
    "Labelbox rejected the {status} report as invalid ({detail}); it is sent again with "
    "{form} metadata"
)
LABELBOX_UNREACHABLE: Final = "LabelboxUnreachable"
MSG_LABELBOX_UNREACHABLE: Final = "deleted without telling Labelbox: {detail}"

# --- Event types ------------------------------------------------------------------------------
# Reasons a person should look at even while the run goes on: their Events are Warnings, as
# Kubernetes' own FailedScheduling and BackOff are (`kubectl get events --field-selector
# type=Warning`). Every reason of a failed run is a Warning too (`events.event_type`).
WARNING_REASONS: Final = frozenset(
    {
        UNSCHEDULABLE,
        IMAGE_PULL_BACKOFF,
        VOLUME_PENDING,
        RETRYING,
        DISRUPTED,
        CRASH_LOOP_BACKOFF,
        FAILING,
        CONTAINER_CONFIG_ERROR,
        LABELBOX_METADATA_REJECTED,
    }
)
