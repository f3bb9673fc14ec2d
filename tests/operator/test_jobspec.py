"""The Job built for a run: every field a cluster and the trainer depend on."""

from __future__ import annotations

import json

import pytest

from lbtrain import contract
from lbtrain.destination import DestinationEscapes
from lbtrain.resources.names import LABEL_MODEL_RUN, LABEL_MODEL_TYPE
from lbtrain_dev.ids import fake_cuid
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
