"""The Job built for a run: every field a cluster and the trainer depend on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lbtrain import contract
from lbtrain.destination import DestinationEscapes
from lbtrain.resources.names import LABEL_MODEL_RUN, LABEL_MODEL_TYPE
from lbtrain_dev.ids import fake_cuid
from lbtrain_operator import scale
from lbtrain_operator.jobspec import build_job, job_name
from lbtrain_operator.settings import Settings
from lbtrain_webhook.modelruns import build_model_run
from lbtrain_webhook.payload import ModelRunRequest

from .builders import run, template


def test_job_is_owned_named_and_labelled_deterministically() -> None:
    job = build_job(run(), "uid-1", template(), Settings())
    assert job["metadata"]["name"] == job_name("mr-1") == "mr-1-train"
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ModelRun", "uid-1", True)
    assert job["metadata"]["labels"][LABEL_MODEL_RUN] == "mr-1"
    assert job["spec"]["template"]["metadata"]["labels"][LABEL_MODEL_RUN] == "mr-1"
    assert build_job(run(), "uid-1", template(), Settings()) == job


def test_long_names_stay_within_label_limits_and_differ() -> None:
    a, b = job_name("x" * 200), job_name("x" * 199 + "y")
    assert len(a) <= 52 and len(b) <= 52 and a != b


@pytest.mark.parametrize("model_type", ["Text_multi_classification", "My  model", "a/b: c!"])
def test_a_run_and_its_job_carry_the_same_model_type_label(model_type: str) -> None:
    """One label_value for both: `-l lbtrain.io/model-type=...` selects a run with its Job."""
    request = ModelRunRequest(fake_cuid("run-1"), model_type)
    mr_labels = build_model_run(request)["metadata"]["labels"]
    job = build_job(run(model_type=model_type), "u", template(model_type), Settings())
    assert job["metadata"]["labels"][LABEL_MODEL_TYPE] == mr_labels[LABEL_MODEL_TYPE]
    assert (
        job["spec"]["template"]["metadata"]["labels"][LABEL_MODEL_TYPE]
        == (mr_labels[LABEL_MODEL_TYPE])
    )


def test_stages_are_containers_sharing_the_workspace() -> None:
    spec = build_job(run(), "u", template(), Settings())["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["export", "prepare"]
    assert [c["name"] for c in spec["containers"]] == ["train"]
    for c in spec["initContainers"] + spec["containers"]:
        assert c["command"] == ["lbtrain", "trainer", c["name"]]
        assert {"name": "workspace", "mountPath": "/workspace"} in c["volumeMounts"]
        assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert spec["restartPolicy"] == "Never"


def test_gpus_only_on_train_and_requests_equal_limits() -> None:
    t = template(gpus=2, resources={"limits": {"memory": "16Gi"}})
    spec = build_job(run(), "u", t, Settings())["spec"]["template"]["spec"]
    train = spec["containers"][0]["resources"]
    assert train["limits"] == {"memory": "16Gi", "nvidia.com/gpu": 2}
    assert train["requests"]["nvidia.com/gpu"] == 2
    assert "nvidia.com/gpu" not in spec["initContainers"][0]["resources"].get("limits", {})


def test_trainer_environment_contract() -> None:
    t = template(
        hyperparameters={"epochs": 3, "lr": 0.1}, labelbox={"endpoint": "http://lb/graphql"}
    )
    r = run(hyperparameters={"epochs": 5})
    env = build_job(r, "u", t, Settings())["spec"]["template"]["spec"]["containers"][0]["env"]
    values = {e["name"]: e.get("value") for e in env}
    assert values[contract.ENV_MODEL_RUN_ID] == fake_cuid("run-1")
    assert values[contract.ENV_MODEL_TYPE] == "image_single_classification"
    assert values[contract.ENV_LABELBOX_ENDPOINT] == "http://lb/graphql"
    assert json.loads(values[contract.ENV_HYPERPARAMETERS]) == {"epochs": 5, "lr": 0.1}
    key = next(e for e in env if e["name"] == contract.ENV_LABELBOX_API_KEY)
    assert key["valueFrom"]["secretKeyRef"] == {"name": "lbtrain-labelbox", "key": "api-key"}
    assert "value" not in key  # the key itself never appears in the Job


def test_artifact_destination_is_the_run_s_folder_under_its_root() -> None:
    t = template(artifacts={"destination": "s3://models/runs/{modelRunId}/weights"})
    env = build_job(run(), "u", t, Settings())["spec"]["template"]["spec"]["containers"][0]["env"]
    values = {e["name"]: e.get("value") for e in env}
    assert values[contract.ENV_ARTIFACTS] == f"s3://models/runs/{fake_cuid('run-1')}/weights"
    assert values[contract.ENV_ARTIFACTS_ROOT] == "s3://models/runs"


@pytest.mark.parametrize(
    "template_destination",
    ["/artifacts/../{modelRunId}", "s3://{modelRunId}/weights", "artifacts/{modelRunId}"],
)
def test_a_destination_that_would_escape_builds_no_job(template_destination: str) -> None:
    t = template(artifacts={"destination": template_destination})
    with pytest.raises(DestinationEscapes):
        build_job(run(), "u", t, Settings())


def test_a_run_id_that_is_not_one_path_segment_builds_no_job() -> None:
    # The CRD refuses such ids now; a ModelRun stored before it did must not escape either.
    t = template(artifacts={"destination": "/artifacts/{modelRunId}"})
    with pytest.raises(DestinationEscapes, match="not one path segment"):
        build_job(run(modelRunId="../../etc"), "u", t, Settings())


def test_failure_policy_ignores_disruptions_and_fails_fast_on_bad_input() -> None:
    t = template(backoffLimit=4, activeDeadlineSeconds=3600, ttlSecondsAfterFinished=60)
    spec = build_job(run(), "u", t, Settings())["spec"]
    assert (
        spec["backoffLimit"],
        spec["activeDeadlineSeconds"],
        spec["ttlSecondsAfterFinished"],
    ) == (4, 3600, 60)
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert rules[1]["action"] == "FailJob"
    assert rules[1]["onExitCodes"]["values"] == [
        contract.EXIT_BAD_INPUT,
        contract.EXIT_DESTINATION_ESCAPES,
        contract.EXIT_DESTINATION_UNUSABLE,
    ]


def test_run_overrides_template_retries_and_deadline() -> None:
    spec = build_job(run(backoffLimit=0, activeDeadlineSeconds=60), "u", template(), Settings())[
        "spec"
    ]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 60)


def test_scheduling_fields_and_restricted_security() -> None:
    t = template(
        nodeSelector={"gpu": "a100"},
        tolerations=[{"key": "gpu", "operator": "Exists"}],
        serviceAccountName="trainer",
        priorityClassName="high",
    )
    spec = build_job(run(), "u", t, Settings())["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"gpu": "a100"}
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert (spec["serviceAccountName"], spec["priorityClassName"]) == ("trainer", "high")
    sc = spec["containers"][0]["securityContext"]
    assert (
        sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"] and sc["readOnlyRootFilesystem"]
    )
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False


# --- scale: processes per pod, pods per run ---------------------------------------------------


def _train(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"]["containers"][0])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_one_process_keeps_the_job_it_always_had() -> None:
    """No torchrun, no launcher variables, no index: existing users see no change."""
    for t in (template(), template(gpus=1), template(gpus=0), template(gpus=0, numProcPerNode=1)):
        job = build_job(run(), "u", t, Settings())
        pod = job["spec"]["template"]["spec"]
        assert _train(job)["command"] == ["lbtrain", "trainer", "train"]
        assert not [n for n in _env(_train(job)) if contract.is_launcher_env(n)]
        assert "ports" not in _train(job) and "subdomain" not in pod
        assert "completionMode" not in job["spec"] and "completions" not in job["spec"]
        assert job["spec"]["backoffLimit"] == 2


def test_every_gpu_of_a_pod_gets_a_process_under_torchrun() -> None:
    job = build_job(run(), "u", template(gpus=4, command=["/opt/my-trainer"]), Settings())
    train = _train(job)
    assert train["command"] == ["torchrun", "/opt/my-trainer", "train"]
    assert train["resources"]["limits"]["nvidia.com/gpu"] == 4
    env = _env(train)
    launcher = {n: v for n, v in env.items() if contract.is_launcher_env(n)}
    assert launcher == {
        "PET_NNODES": "1",
        "PET_NPROC_PER_NODE": "4",
        "PET_STANDALONE": "1",  # a local rendezvous on a free port
        "PET_MAX_RESTARTS": "0",  # the Job and the operator own retries
        "PET_NO_PYTHON": "1",  # the command is an executable, not a script
    }
    assert env[contract.ENV_MODEL_RUN_ID] == fake_cuid("run-1")  # the contract is still there
    # export and prepare run once, never under torchrun, without the launcher's variables
    for init in job["spec"]["template"]["spec"]["initContainers"]:
        assert init["command"] == ["/opt/my-trainer", init["name"]]
        assert not [n for n in _env(init) if contract.is_launcher_env(n)]
    assert "completionMode" not in job["spec"] and job["spec"]["backoffLimit"] == 2


def test_cpu_processes_per_pod_and_equal_gpus() -> None:
    cpu = _train(build_job(run(), "u", template(gpus=0, numProcPerNode=3), Settings()))
    assert cpu["command"][0] == "torchrun"
    assert _env(cpu)["PET_NPROC_PER_NODE"] == "3"
    assert "nvidia.com/gpu" not in cpu.get("resources", {}).get("limits", {})
    same = _train(build_job(run(), "u", template(gpus=2, numProcPerNode=2), Settings()))
    assert _env(same)["PET_NPROC_PER_NODE"] == "2"


def test_several_pods_make_an_indexed_job_with_a_static_rendezvous() -> None:
    t = template(gpus=2, numNodes=3, artifacts={"destination": "s3://b/runs/{modelRunId}"})
    job = build_job(run("7c0ffee-run"), "uid-9", t, Settings())
    spec, name = job["spec"], "7c0ffee-run-train"
    assert job["metadata"]["name"] == name
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert spec["backoffLimit"] == 0  # one failed pod fails the attempt: no rank restarts alone
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["operator"] == "In"
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == "rdzv-7c0ffee-run-train"  # a DNS-1035 label for the Service
    assert pod["restartPolicy"] == "Never"
    train = _train(job)
    assert train["command"] == ["torchrun", "lbtrain", "trainer", "train"]
    assert train["ports"] == [{"name": "rendezvous", "containerPort": 29500, "protocol": "TCP"}]
    launcher = {n: v for n, v in _env(train).items() if contract.is_launcher_env(n)}
    assert launcher == {
        "PET_NNODES": "3",
        "PET_NPROC_PER_NODE": "2",
        "PET_MAX_RESTARTS": "0",
        "PET_NO_PYTHON": "1",
        "PET_RDZV_BACKEND": "static",
        "PET_MASTER_ADDR": "7c0ffee-run-train-0.rdzv-7c0ffee-run-train",
        "PET_MASTER_PORT": "29500",
        "PET_NODE_RANK": {
            "fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
            }
        },
    }


def test_one_process_on_each_of_several_pods_still_runs_torchrun() -> None:
    t = template(gpus=0, numNodes=2, artifacts={"destination": "s3://b/{modelRunId}"})
    job = build_job(run(), "u", t, Settings())
    assert _train(job)["command"][0] == "torchrun"
    assert _env(_train(job))["PET_NPROC_PER_NODE"] == "1"
    assert job["spec"]["completions"] == 2


def test_a_run_overrides_the_template_s_pod_count() -> None:
    t = template(gpus=0, numNodes=4, artifacts={"destination": "s3://b/{modelRunId}"})
    one = build_job(run(numNodes=1), "u", t, Settings())
    assert "completionMode" not in one["spec"] and _train(one)["command"][0] == "lbtrain"
    two = build_job(run(numNodes=2), "u", t, Settings())
    assert two["spec"]["completions"] == 2


def test_the_headless_service_of_a_multi_pod_run() -> None:
    t = template(gpus=0, numNodes=2, artifacts={"destination": "s3://b/{modelRunId}"})
    job = build_job(run(), "uid-1", t, Settings())
    svc = scale.build_service(job, "mr-1", "uid-1")
    assert svc["metadata"]["name"] == job["spec"]["template"]["spec"]["subdomain"]
    assert svc["metadata"]["namespace"] == "ns"
    owner = svc["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("ModelRun", "mr-1", "uid-1")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True  # ranks wait in init containers
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": "mr-1-train"}
    assert svc["spec"]["ports"][0]["port"] == 29500
    assert svc["metadata"]["labels"][LABEL_MODEL_RUN] == "mr-1"


def test_names_stay_dns_labels_for_the_longest_runs() -> None:
    name = job_name("9" * 200)
    assert len(f"{name}-63") <= 63  # the pod hostname of the highest index
    svc = scale.service_name(name)
    assert len(svc) <= 63 and svc[0].isalpha()


def test_every_stage_of_a_multi_pod_run_learns_its_pod_count_and_run_uid() -> None:
    """What pod 0 needs to export once for the run, and the others to wait for it."""
    t = template(gpus=0, numNodes=2, artifacts={"destination": "s3://b/{modelRunId}"})
    job = build_job(run(), "uid-7", t, Settings())
    pod = job["spec"]["template"]["spec"]
    for container in [*pod["initContainers"], *pod["containers"]]:
        env = _env(container)
        assert (env[contract.ENV_NUM_NODES], env[contract.ENV_RUN_UID]) == ("2", "uid-7")
    one = build_job(run(), "uid-7", template(), Settings())["spec"]["template"]["spec"]
    for container in [*one["initContainers"], *one["containers"]]:
        assert contract.ENV_NUM_NODES not in _env(container)
        assert contract.ENV_RUN_UID not in _env(container)
