"""The CRDs as the API server enforces them: schemas, CEL rules, printer columns, short names."""

from __future__ import annotations

from typing import Any

import pytest

from lbtrain.kube import MODELRUNS, TRAININGTEMPLATES, Invalid, KubeClient
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed.binaries import repo_root

pytestmark = [pytest.mark.testbed, pytest.mark.usefixtures("crds")]


def run_body(name: str = "r1", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "modelRunId": fake_cuid("1"),
            "modelType": "ner",
            "modelId": fake_cuid("model1"),
            **spec,
        },
    }


def test_examples_apply_and_show_in_kubectl(kubectl, namespace) -> None:
    result = kubectl("apply", "-n", namespace, "-f", str(repo_root() / "examples" / "templates"))
    assert result.returncode == 0, result.stderr
    result = kubectl(
        "apply", "-n", namespace, "-f", str(repo_root() / "examples" / "modelrun.yaml")
    )
    assert result.returncode == 0, result.stderr
    table = kubectl("get", "tt", "-n", namespace)
    assert table.returncode == 0, table.stderr
    assert table.stdout.split("\n")[0].split() == [
        "NAME",
        "MODEL",
        "TYPE",
        "TASK",
        "LISTED",
        "REASON",
        "GPUS",
        "AGE",
    ]
    assert len(table.stdout.strip().splitlines()) == 7
    runs = kubectl("get", "mr", "-n", namespace)
    assert runs.stdout.split("\n")[0].split() == [
        "NAME",
        "PHASE",
        "REASON",
        "LABELBOX",
        "PROGRESS",
        "MODEL",
        "TYPE",
        "WORKERS",
        "AGE",
    ]
    explained = kubectl("explain", "modelrun.spec.modelRunId")
    assert "Labelbox model run id" in explained.stdout


async def test_missing_required_fields_are_refused(kube: KubeClient, namespace: str) -> None:
    with pytest.raises(Invalid) as info:
        await kube.create(
            MODELRUNS, {"metadata": {"name": "x"}, "spec": {"modelType": "ner"}}, namespace
        )
    assert "spec.modelRunId: Required value" in info.value.message


# Shapes a Labelbox id never has (lbtrain.ids); the webhook refuses the same with 422.
NOT_LABELBOX_IDS = ["../../etc/passwd", "cl-run-1", "CKX0RUN000000000000000001", "c" * 19, "x y"]


@pytest.mark.parametrize("field", ["modelRunId", "modelId", "organizationId"])
async def test_ids_that_are_not_labelbox_ids_are_refused(
    kube: KubeClient, namespace: str, field: str
) -> None:
    for n, bad in enumerate(NOT_LABELBOX_IDS):
        with pytest.raises(Invalid) as info:
            await kube.create(MODELRUNS, run_body(f"bad-{n}", **{field: bad}), namespace)
        assert f"{field} must be a Labelbox id: a cuid" in info.value.message, bad
    assert (await kube.list(MODELRUNS, namespace))["items"] == []
    ok = ["9b2f7c1e-3d4a-4b5c-8d6e-7f8091a2b3c4", "9B2F7C1E-3D4A-4B5C-8D6E-7F8091A2B3C4"]
    for n, good in enumerate([fake_cuid("ok"), "cjhfn5y6s0pk507024nz1ocys", *ok]):
        await kube.create(MODELRUNS, run_body(f"good-{n}", **{field: good}), namespace)


def test_kubectl_apply_of_a_bad_id_says_what_is_allowed(kubectl, namespace, tmp_path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "apiVersion: lbtrain.io/v1alpha1\nkind: ModelRun\nmetadata: {name: escape}\n"
        "spec: {modelRunId: ../../etc/passwd, modelType: ner}\n"
    )
    result = kubectl("apply", "-n", namespace, "-f", str(manifest))
    assert result.returncode != 0
    assert "spec.modelRunId: Invalid value" in result.stderr
    assert "modelRunId must be a Labelbox id: a cuid" in result.stderr
    assert "escape" not in kubectl("get", "mr", "-n", namespace, "-o", "name").stdout


async def test_identity_is_immutable(kube: KubeClient, namespace: str) -> None:
    await kube.create(MODELRUNS, run_body(), namespace)
    for field, value in (
        ("modelRunId", fake_cuid("2")),
        ("modelType", "bounding_box"),
        ("modelId", fake_cuid("model2")),
    ):
        with pytest.raises(Invalid) as info:
            await kube.patch(MODELRUNS, "r1", {"spec": {field: value}}, namespace)
        assert f"{field} is immutable" in info.value.message
    with pytest.raises(Invalid, match="modelId cannot be added or removed"):
        await kube.patch(MODELRUNS, "r1", {"spec": {"modelId": None}}, namespace)
    # Overrides that are not identity can still change.
    await kube.patch(MODELRUNS, "r1", {"spec": {"hyperparameters": {"epochs": 2}}}, namespace)


async def test_status_enums_and_template_validation(kube: KubeClient, namespace: str) -> None:
    await kube.create(MODELRUNS, run_body("r2"), namespace)
    with pytest.raises(Invalid, match="Unsupported value"):
        await kube.patch(
            MODELRUNS, "r2", {"status": {"phase": "Dancing"}}, namespace, subresource="status"
        )
    bad = {"metadata": {"name": "t"}, "spec": {"modelType": "ner", "image": "x", "gpus": -1}}
    with pytest.raises(Invalid, match=r"spec\.gpus"):
        await kube.create(TRAININGTEMPLATES, bad, namespace)
    created = await kube.create(
        TRAININGTEMPLATES,
        {
            "metadata": {"name": "t2"},
            "spec": {"modelType": "Text_multi_classification", "image": "x"},
        },
        namespace,
    )
    # Defaults are applied by the API server, so kubectl get shows what a run will use.
    assert created["spec"]["modelType"] == "Text_multi_classification"
    assert (created["spec"]["gpus"], created["spec"]["backoffLimit"]) == (1, 2)
    assert created["spec"]["command"] == ["lbtrain", "trainer"]
