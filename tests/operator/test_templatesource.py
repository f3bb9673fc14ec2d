"""A run whose TrainingTemplate is not in the operator's index yet is admitted against the API
server's own list, not failed for good as TemplateMissing (templatesource.py): the watch that
feeds the index can lag a template created a moment before its run. A template that is really
missing still fails the run, with the same message."""

from __future__ import annotations

from typing import Any

import pytest

from lbtrain.kube import MODELRUNS, TRAININGTEMPLATES, KubeClient
from lbtrain.resources.models import ModelRun
from lbtrain_dev.ids import fake_cuid
from lbtrain_operator import admission, templatesource
from lbtrain_operator import reasons as r
from lbtrain_operator.settings import Settings

from .builders import IMAGE

pytestmark = [pytest.mark.testbed, pytest.mark.usefixtures("crds")]


async def stored_run(kube: KubeClient, namespace: str, model_type: str) -> tuple[ModelRun, str]:
    body: dict[str, Any] = {
        "metadata": {"name": f"run-{model_type.replace('_', '-')}"},
        "spec": {
            "modelRunId": fake_cuid(model_type),
            "modelType": model_type,
            "modelId": fake_cuid("m"),
        },
    }
    stored = await kube.create(MODELRUNS, body, namespace)
    return ModelRun.model_validate(stored), stored["metadata"]["uid"]


async def test_a_template_the_index_has_not_seen_yet_is_found_on_the_api_server(
    kube: KubeClient, namespace: str
) -> None:
    await kube.create(
        TRAININGTEMPLATES,
        {"metadata": {"name": "fresh"}, "spec": {"modelType": "ner", "image": IMAGE}},
        namespace,
    )
    run, uid = await stored_run(kube, namespace, "ner")
    stale_index: list[dict[str, Any]] = []  # the watch has not delivered the template yet
    assert isinstance(admission.admit(run, uid, stale_index, Settings()), admission.Refused)
    got = await templatesource.admit(kube, run, uid, stale_index, Settings())
    assert isinstance(got, admission.Admitted), got
    assert got.template.metadata.name == "fresh"
    assert got.job["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE


async def test_a_template_missing_on_the_api_server_too_still_fails_the_run(
    kube: KubeClient, namespace: str
) -> None:
    run, uid = await stored_run(kube, namespace, "bounding_box")
    got = await templatesource.admit(kube, run, uid, [], Settings())
    assert isinstance(got, admission.Refused)
    assert got.reason == r.TEMPLATE_MISSING
    assert got.message == r.MSG_TEMPLATE_MISSING.format(model_type="bounding_box", known="none")
