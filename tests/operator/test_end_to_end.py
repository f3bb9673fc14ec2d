"""The operator with real trainer processes: the local pod runner runs the Job's stages as
`lbtrain trainer` commands against the fake Labelbox, so failures come from the trainer itself."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from lbtrain import contract
from lbtrain.kube import PODS
from lbtrain.resources.names import LABEL_MODEL_RUN
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed.podrunner import LocalPodRunner

from .test_operator_lifecycle import FULL, statuses_settle, until

pytestmark = [
    pytest.mark.testbed,
    pytest.mark.trainer,
    pytest.mark.slow,
    pytest.mark.usefixtures("crds", "lbsecret"),
]


@pytest.fixture
async def pod_runner(kube, namespace, tmp_path: Path):
    runner = LocalPodRunner(
        kube,
        namespace,
        tmp_path / "pods",
        max_parallel=1,
        # The fake Labelbox serves the media on 127.0.0.1, which the trainer refuses unless told.
        extra_env={
            "HF_HUB_OFFLINE": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            contract.ENV_ALLOW_LOOPBACK_MEDIA: "true",
        },
    )
    task = asyncio.create_task(runner.run_forever())
    yield runner
    task.cancel()
    await runner.close()


def trainer_template(fake: Any, **hp: Any) -> dict[str, Any]:
    return {
        "gpus": 0,
        "image": "127.0.0.1:1/lbtrain-trainer:test",
        "labelbox": {"endpoint": fake.endpoint, "restEndpoint": fake.rest_endpoint},
        "hyperparameters": {"model_size": "small", **hp},
    }


def break_first_entity(rows: list[dict[str, Any]]) -> str:
    """Point the first NER entity past the end of its text; answer the row's id."""

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            if isinstance(node.get("location"), dict):
                node["location"] = {"start": 5000, "end": 5004, "token": "ghost"}
                return True
            return any(walk(v) for v in node.values())
        return isinstance(node, list) and any(walk(v) for v in node)

    for row in rows:
        if walk(row.get("experiments")):
            return str(row["data_row"]["id"])
    raise AssertionError("no NER entity in the synthetic rows")


@pytest.mark.timeout(300)
async def test_bad_export_row_fails_in_prepare_with_the_trainers_message(
    kube, namespace, fake_labelbox, start_operator, make_template, make_run, pod_runner
) -> None:
    from lbtrain_trainer.synthetic import make_dataset

    data = make_dataset(
        "ner",
        24,
        media_url_for=fake_labelbox.add_media,
        model_id=fake_cuid("model1"),
        model_run_id=fake_cuid("badrow"),
    )
    row_id = break_first_entity(data.rows)
    fake_labelbox.add_model_run(fake_cuid("badrow"), rows=data.rows)
    await make_template("ner", backoffLimit=3, **trainer_template(fake_labelbox))
    start_operator()
    await make_run("badrow", "ner", model_run_id=fake_cuid("badrow"), register=False)
    st = await until(
        kube,
        namespace,
        "badrow",
        lambda s: (s.get("labelbox") or {}).get("acknowledged") == "FAILED",
        timeout=240,
    )
    assert (st["phase"], st["reason"]) == ("Failed", "BadInput")
    assert row_id in st["message"]
    updates = fake_labelbox.status_updates(fake_cuid("badrow"))
    assert [u.status for u in updates] == ["EXPORTING_DATA", "PREPARING_DATA", "FAILED"]
    assert (
        updates[-1].error_message.startswith("BadInput: ") and row_id in updates[-1].error_message
    )
    # Bad data is never retried, whatever the template's backoffLimit.
    assert (
        len((await kube.list(PODS, namespace, label_selector=f"{LABEL_MODEL_RUN}=badrow"))["items"])
        == 1
    )


@pytest.mark.timeout(600)
async def test_pod_deleted_mid_training_is_retried_as_the_template_asks(
    kube, namespace, fake_labelbox, start_operator, make_template, make_run, pod_runner
) -> None:
    from lbtrain_trainer.synthetic import make_dataset

    data = make_dataset(
        "image_single_classification",
        40,
        media_url_for=fake_labelbox.add_media,
        model_id=fake_cuid("model1"),
        model_run_id=fake_cuid("retry"),
    )
    fake_labelbox.add_model_run(fake_cuid("retry"), rows=data.rows)
    await make_template(backoffLimit=1, **trainer_template(fake_labelbox, epochs=40))
    start_operator()
    await make_run("retry", model_run_id=fake_cuid("retry"), register=False)
    await until(kube, namespace, "retry", lambda s: s.get("phase") == "Training", timeout=240)
    await asyncio.sleep(1.0)
    [first] = (await kube.list(PODS, namespace, label_selector=f"{LABEL_MODEL_RUN}=retry"))["items"]
    await kube.delete(PODS, first["metadata"]["name"], namespace)
    st = await until(
        kube,
        namespace,
        "retry",
        lambda s: (s.get("labelbox") or {}).get("acknowledged") in ("COMPLETE", "FAILED"),
        timeout=540,
    )
    assert st["phase"] == "Succeeded", st
    assert st["attempts"] == 1  # the deleted pod counted against backoffLimit 1
    assert st["podName"] != first["metadata"]["name"]
    statuses = fake_labelbox.statuses(fake_cuid("retry"))
    assert [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]] == FULL
    await statuses_settle(fake_labelbox, fake_cuid("retry"), statuses)


@pytest.mark.timeout(600)
async def test_a_run_with_a_rejected_row_completes_with_the_count_in_labelbox_metadata(
    kube, namespace, fake_labelbox, start_operator, make_template, make_run, pod_runner
) -> None:
    import labelbox as lb

    from lbtrain_trainer.synthetic import make_dataset

    run_id = fake_cuid("rejected")
    data = make_dataset(
        "text_single_classification",
        40,
        media_url_for=fake_labelbox.add_media,
        model_id=fake_cuid("model1"),
        model_run_id=run_id,
    )
    fake_labelbox.add_model_run(run_id, rows=data.rows)
    await make_template(
        "text_single_classification",
        **trainer_template(fake_labelbox, epochs=20, min_examples_per_class=1),
    )
    start_operator()
    await make_run("rejected", "text_single_classification", model_run_id=run_id, register=False)
    # Once the export is done, a Labelbox user removes a data row from the model run: the
    # predictions the trainer uploads for it at the end are refused, row by row.
    await until(kube, namespace, "rejected", lambda s: s.get("phase") == "Preparing", timeout=240)
    gone = data.rows[0]["data_row"]["id"]

    def delete() -> None:
        client = lb.Client(
            api_key=fake_labelbox.api_key,
            endpoint=fake_labelbox.endpoint,
            rest_endpoint=fake_labelbox.rest_endpoint,
            enable_experimental=True,
        )
        client.get_model_run(run_id).delete_model_run_data_rows([gone])

    await asyncio.to_thread(delete)
    st = await until(
        kube,
        namespace,
        "rejected",
        lambda s: (s.get("labelbox") or {}).get("acknowledged") in ("COMPLETE", "FAILED"),
        timeout=540,
    )
    assert st["phase"] == "Succeeded", st
    sent = [p for p in fake_labelbox.predictions(run_id) if p["dataRow"]["id"] == gone]
    assert sent, "the removed row's predictions were uploaded"
    final = fake_labelbox.status_updates(run_id)[-1]
    assert final.status == "COMPLETE"
    summary = final.metadata["summary"]
    assert summary["rows_rejected"] == len(sent) and gone in summary["first_rejections"][0]
