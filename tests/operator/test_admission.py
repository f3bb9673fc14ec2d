"""Admission on plain values: every way a run gets its Job, or fails before it has one."""

from __future__ import annotations

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
    got = admit(run(model_type="ner"), "u", [template_object("t", "ner")], SETTINGS)
    assert isinstance(got, Admitted)
    train = got.job["spec"]["template"]["spec"]["containers"][0]
    set_by_operator = {e["name"] for e in train["env"]}
    owned = {
        v
        for k, v in vars(contract).items()
        if k.startswith("ENV_") and k not in ("ENV_ALLOW_HUB_DOWNLOAD", "ENV_ALLOW_LOOPBACK_MEDIA")
    }
    # LBTRAIN_PRETRAINED is set only when the template names weights; it is reserved anyway.
    assert owned - {contract.ENV_PRETRAINED} <= set_by_operator
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
