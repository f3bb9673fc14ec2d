"""The fake Labelbox server, exercised through the real ``labelbox`` SDK (7.17.0).

Every SDK call runs in a worker thread (``asyncio.to_thread``): the SDK is synchronous and the
fake serves from the test's own event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import labelbox as lb
import pytest
import requests
from lbox import exceptions as lbx

from lbtrain_dev.fake_labelbox import FakeLabelbox

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

KEY = "test-key"


@pytest.fixture
async def fake():
    async with FakeLabelbox(api_key=KEY) as server:
        server.add_model_run(
            "mr-1",
            model_id="model-9",
            name="run one",
            rows=[
                {"data_row": {"id": "dr-1", "global_key": "gk-1", "row_data": "a"}},
                {"data_row": {"id": "dr-2", "global_key": "gk-2", "row_data": "b"}},
            ],
            config={"lr": 0.01},
            ontology=[
                {"name": "car", "kind": "rectangle", "schemaId": "fs-car"},
                {"name": "weather", "kind": "radio", "options": [{"name": "sunny"}]},
            ],
        )
        yield server


def client_for(fake: FakeLabelbox, *, key: str = KEY, endpoint: str | None = None) -> lb.Client:
    return lb.Client(
        api_key=key,
        endpoint=endpoint or fake.endpoint,
        rest_endpoint=fake.rest_endpoint,
        enable_experimental=True,
    )


async def get_run(fake: FakeLabelbox, run_id: str = "mr-1", **kwargs) -> lb.ModelRun:
    return await asyncio.to_thread(client_for(fake, **kwargs).get_model_run, run_id)


async def test_get_model_run_returns_seeded_fields(fake):
    run = await get_run(fake)
    assert (run.uid, run.name, run.model_id) == ("mr-1", "run one", "model-9")
    assert run.training_metadata == {"lr": 0.01}
    assert run.created_at is not None  # the SDK parsed the timestamp format
    [request] = fake.requests
    assert (request.path, request.sdk_method) == ("/graphql", "Client:get_model_run")
    assert (request.operation, request.field) == ("GetModelRunPyApi", "modelRun")


async def test_status_updates_are_recorded_in_order_on_gql(fake):
    run = await get_run(fake)
    await asyncio.to_thread(run.update_status, "EXPORTING_DATA")
    await asyncio.to_thread(run.update_status, "TRAINING_MODEL", metadata={"epoch": "1"})
    await asyncio.to_thread(run.update_status, lb.ModelRun.Status.FAILED, error_message="OOMKilled")
    assert fake.statuses("mr-1") == ["EXPORTING_DATA", "TRAINING_MODEL", "FAILED"]
    first, second, third = fake.status_updates("mr-1")
    assert (first.metadata, first.error_message) == (None, None)
    assert second.metadata == {"epoch": "1"}
    assert (third.metadata, third.error_message) == (None, "OOMKilled")
    assert first.at <= second.at <= third.at
    update = await fake.wait_for_status("mr-1", "FAILED", timeout=1)
    assert update.error_message == "OOMKilled"
    sent = [r for r in fake.requests if r.sdk_method == "ModelRun:update_status"]
    assert [r.path for r in sent] == ["/_gql"] * 3
    assert {r.field for r in sent} == {"updateTrainingPipeline"}


async def test_pipeline_read_back_merges_metadata_and_keeps_error(fake):
    client = client_for(fake)
    run = await asyncio.to_thread(client.get_model_run, "mr-1")
    await asyncio.to_thread(run.update_status, "TRAINING_MODEL", {"a": "1"}, "boom")
    await asyncio.to_thread(run.update_status, "COMPLETE", {"b": "2"})
    query = """query trainingPipelinePyApi($modelRunId: ID!) {
        trainingPipeline(where: {id : $modelRunId}) {status, errorMessage, metadata}}"""
    res = await asyncio.to_thread(client.execute, query, {"modelRunId": "mr-1"}, experimental=True)
    assert res["trainingPipeline"] == {
        "status": "COMPLETE",
        "errorMessage": "boom",
        "metadata": {"a": "1", "b": "2"},
    }


async def test_gql_endpoint_serves_every_operation(fake):
    run = await get_run(fake, endpoint=f"{fake.base_url}/_gql")
    assert await asyncio.to_thread(run.get_config) == {"lr": 0.01}
    await asyncio.to_thread(run.update_status, "COMPLETE")
    assert {r.path for r in fake.requests} == {"/_gql"}
    assert fake.statuses("mr-1") == ["COMPLETE"]


async def test_wrong_api_key_is_an_authentication_error(fake):
    with pytest.raises(lbx.AuthenticationError):
        await get_run(fake, key="wrong-key")


async def test_unknown_model_run(fake):
    with pytest.raises(lbx.ResourceNotFoundError):
        await get_run(fake, "no-such-run")
    run = await get_run(fake)
    run.uid = "no-such-run"  # a handle to a run Labelbox does not know
    assert await asyncio.to_thread(run.update_status, "COMPLETE") is None  # silent, as for real
    assert fake.statuses("no-such-run") == []
    assert fake.statuses("mr-1") == []
    assert fake.requests[-1].variables == {
        "modelRunId": "no-such-run",
        "data": {"status": "COMPLETE"},
    }


async def test_5xx_is_retried_by_the_sdk_until_it_heals(fake):
    run = await get_run(fake)
    fake.fail("5xx", times=2, operations=["updateTrainingPipeline"])
    await asyncio.to_thread(run.update_status, "PREPARING_DATA")
    sent = [r for r in fake.requests if r.field == "updateTrainingPipeline"]
    assert [r.failure for r in sent] == ["5xx", "5xx", None]
    assert fake.statuses("mr-1") == ["PREPARING_DATA"]


async def test_injected_auth_not_found_and_reset_failures(fake):
    client = client_for(fake)
    fake.fail("auth", times=1)
    with pytest.raises(lbx.AuthenticationError):
        await asyncio.to_thread(client.get_model_run, "mr-1")
    fake.fail("not_found", times=1, operations=["GetModelRunPyApi"])
    with pytest.raises(lbx.ResourceNotFoundError):
        await asyncio.to_thread(client.get_model_run, "mr-1")
    fake.fail("conn_reset")  # until heal()
    with pytest.raises(lbx.NetworkError):
        await asyncio.to_thread(client.get_model_run, "mr-1")
    fake.heal()
    assert (await asyncio.to_thread(client.get_model_run, "mr-1")).uid == "mr-1"
    assert [r.failure for r in fake.requests] == ["auth", "not_found", "conn_reset", None]


async def test_timeout_hangs_and_drops_the_abandoned_request(fake):
    fake.timeout_hang_s = 1.0
    fake.fail("timeout", times=1)
    body = {
        "query": "mutation M($id: ID!, $data: UpdateTrainingPipelineInput!)"
        "{updateTrainingPipeline(modelRun: {id: $id}, data: $data){status}}",
        "variables": {"id": "mr-1", "data": {"status": "COMPLETE"}},
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    with pytest.raises(requests.exceptions.ReadTimeout):
        await asyncio.to_thread(
            requests.post, fake.endpoint, json=body, headers=headers, timeout=0.2
        )
    await asyncio.sleep(1.2)
    assert fake.statuses("mr-1") == []  # the client gave up, so the update never happened
    reply = await asyncio.to_thread(requests.post, fake.endpoint, json=body, headers=headers)
    assert reply.json() == {"data": {"updateTrainingPipeline": {"status": "COMPLETE"}}}
    assert fake.statuses("mr-1") == ["COMPLETE"]


async def test_stop_cuts_a_hanging_request_short():
    server = FakeLabelbox(api_key=KEY)
    await server.start()
    server.fail("timeout")
    pending = asyncio.create_task(
        asyncio.to_thread(requests.post, server.endpoint, json={"query": "{user{id}}"}, timeout=30)
    )
    while not server.requests:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await server.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        await pending
    assert time.monotonic() - started < 5


async def test_config_get_update_reset(fake):
    run = await get_run(fake)
    assert await asyncio.to_thread(run.get_config) == {"lr": 0.01}
    res = await asyncio.to_thread(run.update_config, {"batch_size": 8})
    assert res == {"trainingMetadata": {"lr": 0.01, "batch_size": 8}}
    assert await asyncio.to_thread(run.get_config) == {"lr": 0.01, "batch_size": 8}
    assert fake.config("mr-1") == {"lr": 0.01, "batch_size": 8}
    assert await asyncio.to_thread(run.reset_config) == {"trainingMetadata": None}
    assert fake.config("mr-1") == {}


async def test_add_predictions_records_rows_and_reports_row_errors(fake):
    run = await get_run(fake)
    rows = [
        {"uuid": "u1", "dataRow": {"id": "dr-1"}, "name": "car", "confidence": 0.9,
         "bbox": {"top": 1.0, "left": 2.0, "height": 3.0, "width": 4.0}},
        {"uuid": "u2", "dataRow": {"globalKey": "gk-2"}, "name": "weather",
         "answer": {"name": "sunny", "confidence": 0.8}},
        {"uuid": "u3", "dataRow": {"id": "dr-2"}, "metricValue": 0.75, "metricName": "custom_iou",
         "aggregation": "ARITHMETIC_MEAN"},
        {"uuid": "u4", "dataRow": {"id": "dr-404"}, "name": "car"},
        {"uuid": "u5", "dataRow": {"id": "dr-1"}},
    ]  # fmt: skip
    fake.import_running_replies = 1  # the creation reply says RUNNING, the first poll FINISHED
    upload = await asyncio.to_thread(run.add_predictions, "preds-1", rows)
    assert upload.state == lb.AnnotationImportState.RUNNING
    await asyncio.to_thread(upload.wait_till_done, 0)
    assert upload.state == lb.AnnotationImportState.FINISHED
    errors = await asyncio.to_thread(lambda: upload.errors)
    assert {e["uuid"]: [x["name"] for x in e["errors"]] for e in errors} == {
        "u4": ["DataRowNotFound", "InvalidAnnotation"],  # a box without its bbox
        "u5": ["MissingFeature"],
    }
    statuses = await asyncio.to_thread(lambda: upload.statuses)
    assert [s["status"] for s in statuses] == ["SUCCESS"] * 3 + ["FAILURE"] * 2
    assert fake.predictions("mr-1") == rows
    assert fake.import_errors("mr-1", "preds-1") == errors
    upload_ops = [r.operation for r in fake.requests if r.sdk_method]
    assert "createMEAPredictionImportByFilePyApi" in upload_ops
    assert "getModelErrorAnalysisPredictionImportPyApi" in upload_ops

    fake.import_running_replies = 0  # FINISHED at once: .errors then does not sleep 10 s
    more = [{"uuid": "u6", "dataRow": {"id": "dr-2"}, "schemaId": "fs-car",
             "bbox": {"top": 0, "left": 0, "height": 1, "width": 1}}]  # fmt: skip
    second = await asyncio.to_thread(run.add_predictions, "preds-2", more)
    assert await asyncio.to_thread(lambda: second.errors) == []
    assert fake.imports("mr-1") == ["preds-1", "preds-2"]
    assert fake.predictions("mr-1") == rows + more
    with pytest.raises(lbx.ResourceConflict):  # import names are unique per model run
        await asyncio.to_thread(run.add_predictions, "preds-2", more)


async def test_import_checks_each_row_against_the_ontology_and_uuids(fake):
    run = await get_run(fake)
    box = {"top": 1, "left": 2, "height": 3, "width": 4}
    rows = [
        {"uuid": "ok-1", "dataRow": {"id": "dr-1"}, "name": "weather", "answer": {"name": "sunny"}},
        {"uuid": "list", "dataRow": {"id": "dr-1"}, "name": "weather", "answer": [{"name": "sunny"}]},
        {"uuid": "opt", "dataRow": {"id": "dr-1"}, "name": "weather", "answer": {"name": "rain"}},
        {"uuid": "feat", "dataRow": {"id": "dr-1"}, "name": "truck", "bbox": box},
        {"uuid": "sid", "dataRow": {"id": "dr-1"}, "schemaId": "fs-other", "bbox": box},
        {"dataRow": {"id": "dr-2"}, "schemaId": "fs-car", "bbox": box},
        {"uuid": "ok-1", "dataRow": {"id": "dr-2"}, "schemaId": "fs-car", "bbox": box},
        {"uuid": "ok-2", "dataRow": {"id": "dr-2"}, "schemaId": "fs-car", "bbox": box},
        {"uuid": "m", "dataRow": {"id": "dr-2"}, "metricValue": 1.0, "featureName": "bike"},
    ]  # fmt: skip
    upload = await asyncio.to_thread(run.add_predictions, "strict", rows)
    statuses = await asyncio.to_thread(lambda: upload.statuses)
    assert [
        (s["uuid"], s["status"], [e["name"] for e in s.get("errors", [])]) for s in statuses
    ] == [
        ("ok-1", "SUCCESS", []),
        ("list", "FAILURE", ["InvalidAnswerShape"]),  # a radio answer is one object
        ("opt", "FAILURE", ["AnswerNotFound"]),
        ("feat", "FAILURE", ["FeatureNotFound"]),
        ("sid", "FAILURE", ["FeatureNotFound"]),
        (None, "FAILURE", ["MissingUuid"]),
        ("ok-1", "FAILURE", ["DuplicateUuid"]),
        ("ok-2", "SUCCESS", []),
        ("m", "FAILURE", ["FeatureNotFound"]),
    ]
    assert [r["uuid"] for r in fake.accepted_predictions("mr-1")] == ["ok-1", "ok-2"]
    again = await asyncio.to_thread(run.add_predictions, "again", rows[:1])
    [error] = await asyncio.to_thread(lambda: again.errors)
    assert error["errors"][0]["name"] == "DuplicateUuid"  # a uuid accepted before stays taken
    assert len(fake.accepted_predictions("mr-1")) == 2


def split_rows(run_id: str, splits: list[str | None]) -> list[dict[str, Any]]:
    rows = []
    for i, split in enumerate(splits):
        run: dict[str, Any] = {"labels": [], "predictions": []}
        if split is not None:
            run["split"] = split
        rows.append(
            {
                "data_row": {"id": f"dr-{i}", "global_key": f"gk-{i}", "row_data": "x"},
                "experiments": {"model-1": {"runs": {run_id: run}}},
            }
        )
    return rows


def exported_splits(client: lb.Client, run_id: str, details: bool) -> list[Any]:
    task = client.get_model_run(run_id).export(params={"model_run_details": details})
    task.wait_till_done()
    return [
        out.json["experiments"]["model-1"]["runs"][run_id].get("split")
        for out in task.get_buffered_stream()
    ]


async def test_export_carries_splits_only_with_model_run_details(fake):
    fake.add_model_run("mr-s", rows=split_rows("mr-s", ["training", "TEST", None]))
    client = client_for(fake)
    got = await asyncio.to_thread(exported_splits, client, "mr-s", True)
    assert got == ["training", "test", None]
    assert await asyncio.to_thread(exported_splits, client, "mr-s", False) == [None] * 3
    fake.export_splits = False  # a Labelbox whose export carries no split at all
    assert await asyncio.to_thread(exported_splits, client, "mr-s", True) == [None] * 3


async def test_model_run_data_rows_pages_splits_and_assignments_write_back(fake):
    splits = ["training", "validation", "test", None] * 30
    fake.add_model_run("mr-s", rows=split_rows("mr-s", splits))
    fake.export_splits = False
    run = await get_run(fake, "mr-s")
    got = await asyncio.to_thread(
        lambda: [(r.data_row().uid, r.data_split.value) for r in run.model_run_data_rows()]
    )
    assert len(got) == 120  # two pages of 100
    assert got[:4] == [
        ("dr-0", "TRAINING"), ("dr-1", "VALIDATION"), ("dr-2", "TEST"), ("dr-3", "UNASSIGNED")
    ]  # fmt: skip
    assert await asyncio.to_thread(run.assign_data_rows_to_split, ["dr-3"], "TEST")
    assert fake.splits("mr-s")["dr-3"] == "TEST"
    with pytest.raises(Exception, match="Job failed"):
        await asyncio.to_thread(run.assign_data_rows_to_split, ["dr-nope"], "TEST")
    fake.export_splits = True
    exported = await asyncio.to_thread(exported_splits, client_for(fake), "mr-s", True)
    assert exported[:4] == ["training", "validation", "test", "test"]


async def test_strict_metadata_rejects_non_string_values(fake):
    run = await get_run(fake)
    fake.strict_metadata = True
    with pytest.raises(lbx.LabelboxError, match="BAD_USER_INPUT"):
        await asyncio.to_thread(run.update_status, "COMPLETE", {"gpus": 1, "summary": {"a": "b"}})
    await asyncio.to_thread(run.update_status, "COMPLETE", {"gpus": "1"})
    assert fake.statuses("mr-1") == ["COMPLETE"]


async def test_add_predictions_from_a_served_url(fake):
    run = await get_run(fake)
    row = {"uuid": "u1", "dataRow": {"id": "dr-1"}, "name": "weather", "answer": {"name": "sunny"}}
    url = fake.add_media("p.ndjson", json.dumps(row).encode() + b"\n", "x")
    upload = await asyncio.to_thread(run.add_predictions, "by-url", url)
    assert await asyncio.to_thread(lambda: upload.errors) == []
    assert fake.predictions("mr-1") == [row]


def export_rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "data_row": {
                "id": f"dr-{i}",
                "global_key": f"gk-{i}",
                "row_data": f"Zürich ✓ 東京 {i}",
            },
            "experiments": {"model-1": {"runs": {"mr-x": {"labels": [], "predictions": []}}}},
        }
        for i in range(n)
    ]


def run_export(client: lb.Client, run_id: str) -> tuple[bool, bool, list[Any]]:
    task = client.get_model_run(run_id).export(
        params={"predictions": False, "model_run_details": True}
    )
    task.wait_till_done()
    if not task.has_result():
        return False, task.has_errors(), []
    return True, task.has_errors(), [out.json for out in task.get_buffered_stream()]


@pytest.mark.parametrize("n", [0, 1, 500])
async def test_export_round_trips_rows(fake, n):
    rows = export_rows(n)
    fake.add_model_run("mr-x", rows=rows)
    fake.export_chunk_bytes = 8 * 1024
    has_result, has_errors, got = await asyncio.to_thread(run_export, client_for(fake), "mr-x")
    assert (has_result, has_errors, got) == (n > 0, False, rows)
    chunks = [r for r in fake.requests if r.path.startswith("/files/export/")]
    assert all(r.sdk_method is None for r in chunks)  # bare requests.get, no SDK headers
    if n <= 1:
        assert len(chunks) == n
    else:
        assert len(chunks) > 5  # the SDK paged through several chunks


async def test_empty_export_has_no_result_stream(fake):
    fake.add_model_run("mr-empty")
    client = client_for(fake)
    task = await asyncio.to_thread(lambda: client.get_model_run("mr-empty").export())
    await asyncio.to_thread(task.wait_till_done)
    with pytest.raises(ValueError, match="does not have a RESULT stream"):
        await asyncio.to_thread(task.get_buffered_stream)


@pytest.mark.slow
async def test_export_task_polling(fake):
    fake.export_in_progress_replies = 1  # the SDK sleeps 2 s between task polls
    client = client_for(fake)
    task = await asyncio.to_thread(lambda: client.get_model_run("mr-1").export())
    assert task.status == "IN_PROGRESS"
    await asyncio.to_thread(task.wait_till_done)
    assert task.status == "COMPLETE"
    stream = await asyncio.to_thread(lambda: [r.json for r in task.get_buffered_stream()])
    assert [row["data_row"]["id"] for row in stream] == ["dr-1", "dr-2"]


async def test_overlong_error_message_is_rejected(fake):
    run = await get_run(fake)
    with pytest.raises(lbx.LabelboxError, match="255"):
        await asyncio.to_thread(run.update_status, "FAILED", error_message="x" * 256)
    assert fake.statuses("mr-1") == []


async def test_media_is_served_without_auth(fake):
    url = fake.add_media("images/a.png", b"\x89PNG...", "image/png")
    assert url == f"{fake.base_url}/media/images/a.png"
    reply = await asyncio.to_thread(requests.get, url)
    assert (reply.status_code, reply.content) == (200, b"\x89PNG...")
    assert reply.headers["Content-Type"] == "image/png"
    missing = await asyncio.to_thread(requests.get, f"{fake.base_url}/media/nope")
    assert missing.status_code == 404


async def test_fail_rejects_bad_arguments(fake):
    with pytest.raises(ValueError, match="unknown failure mode"):
        fake.fail("boom")
    with pytest.raises(ValueError, match="times"):
        fake.fail("5xx", times=0)


def test_in_thread_serves_sync_callers():
    with FakeLabelbox.in_thread(api_key=KEY) as fake:
        fake.add_model_run("mr-sync")
        assert fake.endpoint == f"{fake.base_url}/graphql"
        assert fake.rest_endpoint == f"{fake.base_url}/api/v1"
        run = client_for(fake).get_model_run("mr-sync")
        run.update_status("COMPLETE", metadata={"f1": 0.9})
        assert fake.statuses("mr-sync") == ["COMPLETE"]
        assert fake.status_updates("mr-sync")[0].metadata == {"f1": 0.9}
        base_url = fake.base_url
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{base_url}/media/x", timeout=5)
