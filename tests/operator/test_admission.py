"""Admission on plain values: every way a run gets its Job, or fails before it has one."""

from __future__ import annotations

import dataclasses
from typing import Any

from lbtrain import contract
from lbtrain.resources.models import Phase
from lbtrain.resources.names import (
    ANNOTATION_IMAGE_PULL_GRACE,
    ANNOTATION_TEMPLATE,
    ANNOTATION_TEMPLATE_GENERATION,
    LABEL_MODEL_TYPE,
    LABEL_TASK,
    LABEL_TEMPLATE,
)
from lbtrain_operator import admission
from lbtrain_operator import reasons as r
from lbtrain_operator.admission import Admitted, Refused, admit
from lbtrain_operator.podstate import limits_of
from lbtrain_operator.settings import Settings

from .builders import run, template_object

SETTINGS = Settings()


def env_of(job: dict[str, Any], name: str) -> str:
    train = job["spec"]["template"]["spec"]["containers"][0]
    return str(next(e["value"] for e in train["env"] if e["name"] == name))


def test_the_recorded_template_builds_the_job_with_everything_on_it():
    templates = [
        template_object("bert", "Text classification - BERT", task="text_single_classification"),
        template_object(
            "small",
            "Text classification - fast",
            task="text_single_classification",
            image="127.0.0.1:1/small:1",
            generation=4,
            imagePullGracePeriodSeconds=42,
        ),
    ]
    mr = run(model_type="Text classification - fast", template={"name": "small", "generation": 4})
    got = admit(mr, "uid-1", templates, SETTINGS)
    assert isinstance(got, Admitted)
    job = got.job
    meta = job["metadata"]
    assert meta["annotations"][ANNOTATION_TEMPLATE] == "small"
    assert meta["annotations"][ANNOTATION_TEMPLATE_GENERATION] == "4"
    assert meta["annotations"][ANNOTATION_IMAGE_PULL_GRACE] == "42"
    assert limits_of(job).image_pull_grace_s == 42  # what podstate applies is on the Job
    assert meta["labels"][LABEL_TEMPLATE] == "small"
    assert meta["labels"][LABEL_TASK] == "text_single_classification"
    assert meta["labels"][LABEL_MODEL_TYPE] == "Text_classification_-_fast"
    assert env_of(job, contract.ENV_MODEL_TYPE) == "text_single_classification"
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "127.0.0.1:1/small:1"


def test_a_run_made_by_hand_gets_the_template_serving_its_name():
    templates = [
        template_object("young", "ner", created="2026-05-01T00:00:00Z", image="young:1"),
        template_object("old", "ner", created="2026-04-01T00:00:00Z", image="old:1"),
    ]
    got = admit(run(model_type="ner"), "uid-1", templates, SETTINGS)
    assert isinstance(got, Admitted)
    assert got.template.metadata.name == "old"  # the catalogue's rule, as GET /models says
    assert env_of(got.job, contract.ENV_MODEL_TYPE) == "ner"


def test_a_name_nobody_serves_fails_naming_the_known_ones():
    templates = [template_object("a", "ner"), template_object("b", "bounding_box")]
    got = admit(run(model_type="Ner"), "uid-1", templates, SETTINGS)
    assert got == Refused(
        r.TEMPLATE_MISSING,
        "no TrainingTemplate serves model type 'Ner'; known: 'bounding_box', 'ner'",
    )
    assert got.observation().phase is Phase.FAILED


def test_a_recorded_template_that_was_deleted_or_renamed_fails_the_run():
    gone = admit(run(model_type="ner", template={"name": "x"}), "u", [], SETTINGS)
    assert isinstance(gone, Refused) and gone.reason == r.TEMPLATE_MISSING
    assert "TrainingTemplate x" in gone.message and "no longer exists" in gone.message
    renamed = admit(
        run(model_type="ner", template={"name": "x"}),
        "u",
        [template_object("x", "NER v2"), template_object("y", "ner")],
        SETTINGS,
    )
    assert isinstance(renamed, Refused) and renamed.reason == r.TEMPLATE_MISSING
    assert "now serves 'NER v2'" in renamed.message  # never silently another template


def test_an_edited_template_builds_at_its_current_generation():
    edited = template_object("t", "ner", generation=7, image="fixed:2")
    got = admit(
        run(model_type="ner", template={"name": "t", "generation": 5}), "u", [edited], SETTINGS
    )
    assert isinstance(got, Admitted)
    assert got.job["metadata"]["annotations"][ANNOTATION_TEMPLATE_GENERATION] == "7"
    assert got.job["spec"]["template"]["spec"]["containers"][0]["image"] == "fixed:2"


def test_an_invalid_template_fails_with_its_name():
    broken = template_object("broken", "ner", gpus="many")
    got = admit(run(model_type="ner"), "u", [broken], SETTINGS)
    assert isinstance(got, Refused) and got.reason == r.INVALID_TEMPLATE
    assert got.message.startswith("TrainingTemplate broken cannot build a Job")


def test_reserved_environment_is_refused_naming_each_variable():
    sneaky = template_object(
        "sneaky",
        "ner",
        env=[
            {"name": "LBTRAIN_ARTIFACTS", "value": "/elsewhere"},
            {"name": "LABELBOX_ENDPOINT", "value": "https://x"},
            {"name": "MY_OWN", "value": "fine"},
        ],
    )
    got = admit(run(model_type="ner"), "u", [sneaky], SETTINGS)
    assert isinstance(got, Refused) and got.reason == r.RESERVED_ENVIRONMENT
    assert "LABELBOX_ENDPOINT, LBTRAIN_ARTIFACTS" in got.message
    assert "MY_OWN" not in got.message
    fine = template_object("fine", "ner", env=[{"name": "MY_OWN", "value": "fine"}])
    assert isinstance(admit(run(model_type="ner"), "u", [fine], SETTINGS), Admitted)


def test_every_contract_variable_the_operator_sets_is_reserved():
    # With live progress on (a progress URL), as the chart runs the operator.
    settings = dataclasses.replace(SETTINGS, progress_url="http://op.lbtrain.svc:8082/progress")
    got = admit(run(model_type="ner"), "u", [template_object("t", "ner")], settings)
    assert isinstance(got, Admitted)
    train = got.job["spec"]["template"]["spec"]["containers"][0]
    set_by_operator = {e["name"] for e in train["env"]}
    owned = {
        v
        for k, v in vars(contract).items()
        if k.startswith("ENV_")
        and not k.startswith("ENV_PET_")  # the launcher's, reserved by their own rule
        and k not in ("ENV_ALLOW_HUB_DOWNLOAD", "ENV_ALLOW_LOOPBACK_MEDIA")
    }
    # LBTRAIN_PRETRAINED is set only when the template names weights, LBTRAIN_NUM_NODES and
    # LBTRAIN_RUN_UID only for a run of several pods; they are reserved anyway.
    only_sometimes = {contract.ENV_PRETRAINED, contract.ENV_NUM_NODES, contract.ENV_RUN_UID}
    assert owned - only_sometimes <= set_by_operator
    assert owned == contract.RESERVED_ENV


def test_a_destination_outside_its_root_fails_before_any_job():
    escaping = template_object(
        "t", "ner", artifacts={"destination": "/artifacts/{modelRunId}/../.."}
    )
    got = admit(run(model_type="ner"), "u", [escaping], SETTINGS)
    assert isinstance(got, Refused) and got.reason == r.ARTIFACT_DESTINATION_ESCAPES


def test_the_api_servers_refusals_fail_the_run_and_the_rest_are_retried():
    for status in (400, 422):
        refused = admission.refused_by_server(status, "spec.template: Invalid value")
        assert refused == Refused(
            r.JOB_REJECTED, "the API server refused the Job: spec.template: Invalid value"
        )
    for status in (409, 429, 500, 503):
        assert admission.refused_by_server(status, "busy") is None


def test_a_deleted_job_fails_the_run():
    assert admission.job_deleted("mr-1-train") == Refused(
        r.JOB_DELETED, "the Job mr-1-train was deleted before it finished"
    )


def test_the_launcher_s_variables_are_refused_naming_each_and_where():
    for name in ("PET_NNODES", "PET_RDZV_ENDPOINT", "MASTER_ADDR", "MASTER_PORT", "RANK"):
        assert contract.is_launcher_env(name)
    assert not contract.is_launcher_env("PETS") and not contract.is_launcher_env("MY_RANK")
    launcher = template_object(
        "ddp",
        "ner",
        env=[
            {"name": "WORLD_SIZE", "value": "8"},
            {"name": "PET_NPROC_PER_NODE", "value": "8"},
            {"name": "LOCAL_WORLD_SIZE", "value": "8"},
            {"name": "OMP_NUM_THREADS", "value": "4"},  # the user's to tune
        ],
    )
    got = admit(run(model_type="ner"), "u", [launcher], SETTINGS)
    assert got == Refused(
        r.RESERVED_ENVIRONMENT,
        "TrainingTemplate ddp sets LOCAL_WORLD_SIZE, PET_NPROC_PER_NODE, WORLD_SIZE in spec.env, "
        "which torchrun reads or sets for each training process; the operator sets them from "
        "spec.gpus, spec.numProcPerNode and spec.numNodes, so remove them from the template and "
        "use those fields",
    )
    both = template_object(
        "both",
        "ner",
        env=[{"name": "RANK", "value": "0"}, {"name": "LBTRAIN_ARTIFACTS", "value": "/x"}],
    )
    got = admit(run(model_type="ner"), "u", [both], SETTINGS)
    assert isinstance(got, Refused) and got.reason == r.RESERVED_ENVIRONMENT
    assert "sets LBTRAIN_ARTIFACTS in spec.env" in got.message
    assert "sets RANK in spec.env" in got.message


def test_processes_per_pod_other_than_the_gpus_are_refused():
    odd = template_object("odd", "ner", gpus=4, numProcPerNode=2)
    got = admit(run(model_type="ner"), "u", [odd], SETTINGS)
    assert got == Refused(
        r.INVALID_SCALE,
        "TrainingTemplate odd asks for 2 processes per pod (spec.numProcPerNode) on 4 GPUs "
        "(spec.gpus); each process trains on one GPU, so leave numProcPerNode unset or set it "
        "to 4",
    )
    for fine in (
        template_object("a", "ner", gpus=4, numProcPerNode=4),
        template_object("a", "ner", gpus=4),
        template_object("a", "ner", gpus=0, numProcPerNode=3),
    ):
        assert isinstance(admit(run(model_type="ner"), "u", [fine], SETTINGS), Admitted)


def _multi(name: str, **spec: Any) -> dict[str, Any]:
    return template_object(name, "ner", gpus=0, numNodes=2, **spec)


RWX = {"spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}
RWO = {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}


def test_several_pods_need_a_destination_they_all_share():
    shared = [
        _multi("s3", artifacts={"destination": "s3://bucket/runs/{modelRunId}"}),
        _multi("rwx", artifacts={"volumeClaimTemplate": RWX}),
        _multi(
            "nfs",
            artifacts={"destination": "/models/{modelRunId}"},
            volumes=[{"name": "models", "nfs": {"server": "10.0.0.2", "path": "/m"}}],
            volumeMounts=[{"name": "models", "mountPath": "/models"}],
        ),
    ]
    for body in shared:
        got = admit(run(model_type="ner"), "uid-1", [body], SETTINGS)
        assert isinstance(got, Admitted), body["metadata"]["name"]
        assert got.service is not None
        assert got.service["spec"]["selector"] == {"batch.kubernetes.io/job-name": "mr-1-train"}
        assert got.job["spec"]["completions"] == 2
    run_id = run().spec.model_run_id
    local = admit(run(model_type="ner"), "u", [_multi("local")], SETTINGS)
    assert local == Refused(
        r.ARTIFACT_DESTINATION_NOT_SHARED,
        f"the run trains on 2 pods (numNodes), but its artifact destination "
        f"/workspace/artifacts/{run_id} lies in the pod's own filesystem (lost with the pod); "
        "every pod must reach the checkpoint rank 0 writes, so use a destination all pods share "
        "(an object store such as s3://bucket/runs/{modelRunId}, or a ReadWriteMany claim: "
        "artifacts.volumeClaimTemplate with accessModes [ReadWriteMany]), or train on one pod",
    )
    rwo = admit(
        run(model_type="ner"),
        "u",
        [_multi("rwo", artifacts={"volumeClaimTemplate": RWO})],
        SETTINGS,
    )
    assert isinstance(rwo, Refused) and rwo.reason == r.ARTIFACT_DESTINATION_NOT_SHARED
    assert "is on the run's claim, which is not ReadWriteMany (accessModes: ReadWriteOnce)" in (
        rwo.message
    )
    host = _multi(
        "host",
        artifacts={"destination": "/models/{modelRunId}"},
        volumes=[{"name": "models", "hostPath": {"path": "/srv/m"}}],
        volumeMounts=[{"name": "models", "mountPath": "/models"}],
    )
    got = admit(run(model_type="ner"), "u", [host], SETTINGS)
    assert isinstance(got, Refused)
    assert "is on the template's volume models (hostPath)" in got.message


def test_a_run_on_one_pod_keeps_any_destination_and_no_service():
    got = admit(run(model_type="ner", numNodes=1), "u", [_multi("local")], SETTINGS)
    assert isinstance(got, Admitted) and got.service is None
    single = admit(run(model_type="ner"), "u", [template_object("t", "ner")], SETTINGS)
    assert isinstance(single, Admitted) and single.service is None
    refused = admit(
        run(model_type="ner", numNodes=2), "u", [template_object("t", "ner", gpus=0)], SETTINGS
    )
    assert isinstance(refused, Refused)
    assert refused.reason == r.ARTIFACT_DESTINATION_NOT_SHARED  # the run's own count decides
