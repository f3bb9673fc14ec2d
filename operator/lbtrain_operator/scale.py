"""How many processes and pods a run trains with, and what that adds to its Job: pure.

A template's `gpus: N` used to give one pod with N GPUs and one process on `cuda:0`. The train
stage now runs one process per GPU under torchrun (`numProcPerNode` asks for CPU processes the
same way), and `numNodes` (overridable per ModelRun) spreads a run over several pods. The
launcher is configured the way Kubeflow Trainer's torch plugin configures it, through torchrun's
`PET_<FLAG>` variables, so a user who knows one knows the other:

- one pod, N processes: `PET_NNODES=1`, `PET_NPROC_PER_NODE=N`, `PET_STANDALONE=1` (a local
  rendezvous on a free port), `PET_MAX_RESTARTS=0` (a failed rank fails the container; the Job
  and the operator own retries), `PET_NO_PYTHON=1` (the template's command is an executable,
  `lbtrain trainer`, not a Python script). The Job is otherwise unchanged.
- M pods: one Indexed Job (completions = parallelism = M, `backoffLimit: 0`: one failed pod fails
  the attempt, no rank restarts alone) and a headless Service whose name is the pods'
  `subdomain`, publishing not-ready addresses (ranks sit in the export and prepare init
  containers for minutes, and a rank resolves rank 0's name before it is Ready). Static
  rendezvous: `PET_NODE_RANK` is the pod's completion index, `PET_MASTER_ADDR` is index 0's
  hostname `<job>-0.<service>`, so global rank 0, the rank that uploads, is always pod 0. A
  disruption fails the attempt as a whole too (`FailJob` on `DisruptionTarget`).

Export and prepare stay init containers, never under torchrun; in a multi-pod run only pod 0
exports and prepares (`stage_env` tells every pod the pod count and the run's uid), and the
others unpack what it published to the shared destination.
A run of one process keeps exactly the Job it had before this module existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from lbtrain import contract
from lbtrain.resources.models import ModelRun, TrainingTemplate
from lbtrain.resources.names import API_GROUP
from lbtrain_operator import owners, storage
from lbtrain_operator import reasons as r

SERVICE_PREFIX: Final = "rdzv-"  # Service names are DNS-1035 labels: they start with a letter
RENDEZVOUS_PORT_NAME: Final = "rendezvous"
COMPLETION_INDEX: Final = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
JOB_NAME_LABEL: Final = "batch.kubernetes.io/job-name"
# The run's retry budget (its backoffLimit) on each attempt's Job, whose own backoffLimit is 0:
# the operator retries the attempt as a whole (`attempts`).
ANNOTATION_RETRY_BUDGET: Final = f"{API_GROUP}/retry-budget"
# Volumes every pod of a run mounts as one filesystem wherever it runs. A claim named by the
# template is trusted to be ReadWriteMany (its access mode is not the template's to say).
SHARED_VOLUME_KINDS: Final = frozenset(
    {"persistentVolumeClaim", "nfs", "cephfs", "glusterfs", "azureFile"}
)


@dataclass(frozen=True)
class Scale:
    """Pods per run and training processes per pod."""

    nodes: int = 1
    procs: int = 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs

    @property
    def launched(self) -> bool:
        """Whether the train stage runs under torchrun."""
        return self.world_size > 1

    @property
    def multi_pod(self) -> bool:
        return self.nodes > 1


def processes_mismatch(template: TrainingTemplate) -> str | None:
    """The refusal message when `numProcPerNode` contradicts `gpus`; None when it does not."""
    tspec = template.spec
    procs = tspec.num_proc_per_node
    if tspec.gpus > 0 and procs is not None and procs != tspec.gpus:
        return r.MSG_PROCESSES_NOT_GPUS.format(
            template=template.metadata.name, procs=procs, gpus=tspec.gpus
        )
    return None


def scale_of(run: ModelRun, template: TrainingTemplate) -> Scale:
    """The run's pods (its own `numNodes`, else the template's) and processes per pod (one per
    GPU; without GPUs, `numProcPerNode`, default 1)."""
    tspec = template.spec
    procs = tspec.gpus if tspec.gpus > 0 else (tspec.num_proc_per_node or 1)
    nodes = run.spec.num_nodes if run.spec.num_nodes is not None else tspec.num_nodes
    return Scale(nodes=nodes, procs=procs)


def service_name(job_name: str) -> str:
    """The headless Service (and the pods' subdomain) of a multi-pod Job: `rdzv-<job>`. Job
    names are at most 52 characters (`jobspec.job_name`), so this stays within 63, and the
    prefix makes it a DNS-1035 label even when the run's name starts with a digit."""
    return f"{SERVICE_PREFIX}{job_name}"


def master_addr(job_name: str) -> str:
    """Index 0's name: `<job>-0` is its hostname, the Service its subdomain (the namespace's
    search path completes it)."""
    return f"{job_name}-0.{service_name(job_name)}"


def launcher_env(scale: Scale, job_name: str) -> list[dict[str, Any]]:
    """torchrun's flags as `PET_*` variables for the train container; none for one process."""
    if not scale.launched:
        return []
    values = {
        contract.ENV_PET_NNODES: str(scale.nodes),
        contract.ENV_PET_NPROC_PER_NODE: str(scale.procs),
        contract.ENV_PET_MAX_RESTARTS: "0",
        contract.ENV_PET_NO_PYTHON: "1",
    }
    if not scale.multi_pod:
        env = [{"name": k, "value": v} for k, v in values.items()]
        return [*env, {"name": contract.ENV_PET_STANDALONE, "value": "1"}]
    values |= {
        contract.ENV_PET_RDZV_BACKEND: "static",
        contract.ENV_PET_MASTER_ADDR: master_addr(job_name),
        contract.ENV_PET_MASTER_PORT: str(contract.RENDEZVOUS_PORT),
    }
    env = [{"name": k, "value": v} for k, v in values.items()]
    rank = {"fieldRef": {"fieldPath": COMPLETION_INDEX}}
    return [*env, {"name": contract.ENV_PET_NODE_RANK, "valueFrom": rank}]


def stage_env(scale: Scale, run_uid: str) -> list[dict[str, Any]]:
    """What every stage container of a multi-pod run learns (none for one pod): the pod count
    and the ModelRun's uid. With them, pod index 0 exports and prepares once and publishes the
    result to the shared destination for the other pods and for the run's retries."""
    if not scale.multi_pod:
        return []
    return [
        {"name": contract.ENV_NUM_NODES, "value": str(scale.nodes)},
        {"name": contract.ENV_RUN_UID, "value": run_uid},
    ]


def train_command(command: list[str], scale: Scale) -> list[str]:
    """`command + [train]`, behind torchrun when the run has more than one process."""
    stage = [*command, contract.STAGE_TRAIN]
    return [contract.LAUNCHER, *stage] if scale.launched else stage


def indexed(job: dict[str, Any], scale: Scale) -> dict[str, Any]:
    """The Job of a multi-pod run: `job` made Indexed, its pods named under the Service, rank 0's
    port declared, and no retry of a single pod (one failed rank fails the attempt)."""
    if not scale.multi_pod:
        return job
    name = job["metadata"]["name"]
    pod = job["spec"]["template"]["spec"]
    pod["subdomain"] = service_name(name)
    train = next(c for c in pod["containers"] if c["name"] == contract.STAGE_TRAIN)
    port = {
        "name": RENDEZVOUS_PORT_NAME,
        "containerPort": contract.RENDEZVOUS_PORT,
        "protocol": "TCP",
    }
    train["ports"] = [port]
    annotations = job["metadata"].setdefault("annotations", {})
    annotations[ANNOTATION_RETRY_BUDGET] = str(job["spec"].get("backoffLimit", 0))
    job["spec"] |= {
        "completionMode": "Indexed",
        "completions": scale.nodes,
        "parallelism": scale.nodes,
        "backoffLimit": 0,
    }
    # A disrupted pod (eviction, preemption) fails the attempt too: the Job controller would
    # replace it alone, and the other ranks would wait for it in a collective until their
    # process group timed out.
    rules = job["spec"]["podFailurePolicy"]["rules"]
    job["spec"]["podFailurePolicy"]["rules"] = [
        {**rule, "action": "FailJob"} if rule.get("onPodConditions") else rule for rule in rules
    ]
    return job


def build_service(job: dict[str, Any], run_name: str, run_uid: str) -> dict[str, Any]:
    """The headless Service a multi-pod Job's pods find rank 0 through, owned by the ModelRun."""
    meta = job["metadata"]
    name = meta["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(name),
            "namespace": meta.get("namespace"),
            "labels": dict(meta.get("labels") or {}),
            "ownerReferences": [owners.run_reference(run_name, run_uid)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {JOB_NAME_LABEL: name},
            "ports": [
                {
                    "name": RENDEZVOUS_PORT_NAME,
                    "port": contract.RENDEZVOUS_PORT,
                    "targetPort": contract.RENDEZVOUS_PORT,
                    "protocol": "TCP",
                }
            ],
        },
    }


def _deepest_mount(path: str, mounts: list[tuple[str, str]]) -> str | None:
    """The volume name of the deepest mount that covers `path`."""
    segments = [s for s in path.split("/") if s]
    best: tuple[int, str] | None = None
    for mount_path, volume in mounts:
        under = [s for s in mount_path.split("/") if s]
        if segments[: len(under)] == under and (best is None or len(under) > best[0]):
            best = (len(under), volume)
    return best[1] if best else None


def unshared(destination: str, template: TrainingTemplate) -> str | None:
    """None when every pod of a run reads and writes the same `destination` (an object store, a
    ReadWriteMany claim, a shared volume of the template); else why not, in words."""
    path = storage.local_path(destination)
    if path is None:
        return None
    tspec = template.spec
    mounts: list[tuple[str, str]] = [
        (contract.DEFAULT_WORKSPACE, "workspace"),
        (storage.TMP_PATH, "tmp"),
    ]
    if storage.has_claim(template):
        mounts.append((tspec.artifacts.mount_path, storage.CLAIM_VOLUME))
    mounts += [
        (str(m.get("mountPath")), str(m.get("name")))
        for m in tspec.volume_mounts
        if isinstance(m.get("mountPath"), str)
    ]
    volume = _deepest_mount(path, mounts)
    if volume == storage.CLAIM_VOLUME:
        claim = tspec.artifacts.volume_claim_template
        modes = list((claim.spec if claim else {}).get("accessModes") or [])
        if "ReadWriteMany" in modes:
            return None
        return r.MSG_NOT_SHARED_CLAIM.format(modes=", ".join(modes) or "none")
    own = {str(v.get("name")): v for v in tspec.volumes}
    if volume in own:
        kind = next((k for k in own[volume] if k != "name"), "unknown")
        if kind in SHARED_VOLUME_KINDS:
            return None
        return r.MSG_NOT_SHARED_VOLUME.format(volume=volume, kind=kind)
    return r.MSG_NOT_SHARED_POD_LOCAL
