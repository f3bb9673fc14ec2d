"""The trainer against a strict fake Labelbox (through the real SDK): where splits come from,
uploads that survive rejected rows, and retries that never upload the same predictions twice."""

from __future__ import annotations

import copy
import json
from collections import Counter
from typing import Any

import labelbox as lb
import pytest

from lbtrain_trainer import checkpoint, features, labelbox_io
from lbtrain_trainer.synthetic import SPLIT_CYCLE


def _sources(run) -> dict[str, int]:
    return dict(
        Counter(json.loads((run.workspace / "splits.json").read_text())["sources"].values())
    )


def test_splits_come_from_model_run_data_rows_when_the_export_has_none(seed):
    run = seed("text_single_classification", n_rows=40, min_examples_per_class=1)
    run.fake.export_splits = False  # Labelbox holds the splits, its export does not say them
    assert run.main("export") == 0
    assert run.summary()["split_sources"] == {"export": 0, "labelbox": 40, "hash": 0}
    assert _sources(run) == {"labelbox": 40}
    assert run.main("prepare") == 0
    expected = Counter(SPLIT_CYCLE[i % len(SPLIT_CYCLE)] for i in range(40))
    got = run.summary()["splits"]
    assert got == {"train": expected["training"], "validation": expected["validation"],
                   "test": expected["test"]}  # fmt: skip
    assert run.summary()["split_sources"]["labelbox"] == 40


def test_the_trainers_requests_name_lbtrain_as_their_sdk_caller(seed):
    """Labelbox's telemetry header names the trainer on every GraphQL call of an export (the
    SDK's own guess walks the call stack per request: ~23 ms of CPU each, see labelbox_io)."""
    run = seed("text_single_classification", n_rows=40, min_examples_per_class=1)
    before = len(run.fake.requests)  # the fake serves the whole module
    assert run.main("export") == 0
    calls = [r for r in run.fake.requests[before:] if r.path.endswith(("/graphql", "/_gql"))]
    chunks = [r for r in calls if r.operation == "GetExportFileFromOffsetPyApi"]
    assert chunks and len(calls) >= 6  # the run, its config, the export task, its chunks
    assert {r.sdk_method for r in chunks} == {labelbox_io.SDK_METHOD}
    named_by_sdk = {r.operation for r in calls if r.sdk_method != labelbox_io.SDK_METHOD}
    # Only the SDK's paginated queries name themselves (pagination sets and clears the name):
    # the export task's lookup, and model_run_data_rows() where the export carries no splits.
    paginated = {"GetUserCreatedTasksPyApi", "modelRunPyApi", "GetMetadataOntologyBetaPyApi"}
    assert "GetUserCreatedTasksPyApi" in named_by_sdk and named_by_sdk <= paginated, named_by_sdk


def test_unassigned_rows_are_hashed_counted_and_written_back_when_asked(seed):
    run = seed(
        "text_single_classification",
        n_rows=30,
        assign_splits=False,
        min_examples_per_class=1,
        write_back_splits=True,
    )
    assert set(run.fake.splits(run.run_id).values()) == {"UNASSIGNED"}
    assert run.main("export") == 0
    summary = run.summary()
    assert summary["split_sources"] == {"export": 0, "labelbox": 0, "hash": 30}
    assert summary["splits_written_back"] == 30
    written = run.fake.splits(run.run_id)
    plan = json.loads((run.workspace / "splits.json").read_text())["splits"]
    names = {"train": "TRAINING", "validation": "VALIDATION", "test": "TEST"}
    assert written == {row_id: names[split] for row_id, split in plan.items()}


@pytest.mark.trainer
def test_a_run_with_rejected_rows_completes_and_counts_them(seed):
    run = seed("text_single_classification", n_rows=40, min_examples_per_class=1, epochs=1)
    assert run.main("export") == 0 and run.main("prepare") == 0
    gone = run.dataset.rows[0]["data_row"]["id"]  # removed from the run while it trains
    client = lb.Client(
        api_key=run.fake.api_key,
        endpoint=run.fake.endpoint,
        rest_endpoint=run.fake.rest_endpoint,
        enable_experimental=True,
    )
    client.get_model_run(run.run_id).delete_model_run_data_rows([gone])
    assert run.main("train") == 0
    summary = run.summary()
    sent = [r for r in run.fake.predictions(run.run_id) if r["dataRow"]["id"] == gone]
    assert sent and summary["rows_rejected"] == len(sent)
    assert gone in summary["first_rejections"][0]
    assert summary["rows_uploaded"] == len(run.fake.predictions(run.run_id))
    results = run.fake.config(run.run_id)["lbtrain_results"]
    assert results["upload"]["rejected"] == len(sent)
    # every row of the run got a prediction (predict_splits "all"), each metric named by split
    predicted = {r["dataRow"]["id"] for r in run.fake.accepted_predictions(run.run_id)}
    assert predicted == {r["data_row"]["id"] for r in run.dataset.rows} - {gone}
    names = {r.get("metricName") for r in run.fake.accepted_predictions(run.run_id)}
    assert {"accuracy_test", "accuracy_train", "accuracy_validation"} <= names
    assert all(n is None or n.endswith(("_test", "_train", "_validation")) for n in names)


@pytest.mark.trainer
def test_predictions_can_be_limited_to_the_test_split(seed):
    run = seed("text_single_classification", n_rows=40, min_examples_per_class=1, epochs=1,
               predict_splits="test")  # fmt: skip
    assert run.main("run") == 0
    test_rows = {
        r["data_row"]["id"]
        for i, r in enumerate(run.dataset.rows)
        if SPLIT_CYCLE[i % len(SPLIT_CYCLE)] == "test"
    }
    assert {r["dataRow"]["id"] for r in run.fake.accepted_predictions(run.run_id)} == test_rows


@pytest.mark.trainer
def test_a_crash_after_the_upload_and_a_retry_leave_one_set_of_predictions(seed, monkeypatch):
    run = seed("text_single_classification", n_rows=40, min_examples_per_class=1, epochs=1)
    original = checkpoint.Checkpointer.mark_uploaded

    def crash(self, *args, **kwargs):
        raise RuntimeError("node evicted after the upload")

    monkeypatch.setattr(checkpoint.Checkpointer, "mark_uploaded", crash)
    assert run.main("run") == 1  # retriable: the pod is restarted
    first = run.fake.accepted_predictions(run.run_id)
    assert first and run.fake.imports(run.run_id)
    monkeypatch.setattr(checkpoint.Checkpointer, "mark_uploaded", original)
    assert run.main("train") == 0
    imports = run.fake.imports(run.run_id)
    assert len(imports) == 1  # found by name, not uploaded again
    accepted = run.fake.accepted_predictions(run.run_id)
    assert accepted == first and len({r["uuid"] for r in accepted}) == len(accepted)
    assert run.fake.import_errors(run.run_id, imports[0]) == []
    assert run.summary()["rows_rejected"] == 0


def _strip_schema_ids(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_schema_ids(v) for k, v in node.items() if k != "feature_schema_id"}
    if isinstance(node, list):
        return [_strip_schema_ids(v) for v in node]
    return node


def test_schema_ids_replace_names_only_where_the_export_gives_one_unambiguously():
    label = {
        "annotations": {
            "objects": [
                {"name": "car", "feature_schema_id": "fs-car", "bounding_box": {}},
                {"name": "dup", "feature_schema_id": "fs-a", "bounding_box": {}},
                {"name": "dup", "feature_schema_id": "fs-b", "bounding_box": {}},
                {"name": "bare", "bounding_box": {}},
            ],
            "classifications": [
                {"name": "w", "feature_schema_id": "fs-w",
                 "radio_answer": {"name": "sun", "feature_schema_id": "fs-sun"}},
            ],
        }
    }  # fmt: skip
    table = features.collect([{"experiments": {"m": {"runs": {"r": {"labels": [label]}}}}}])
    rows: list[dict[str, Any]] = [
        {"uuid": "1", "name": "car", "bbox": {}},
        {"uuid": "2", "name": "dup", "bbox": {}},
        {"uuid": "3", "name": "bare", "bbox": {}},
        {"uuid": "4", "name": "w", "answer": {"name": "sun", "confidence": 0.5}},
        {"uuid": "5", "name": "w", "answer": {"name": "rain"}},
        {"uuid": "6", "metricValue": 1.0, "featureName": "car"},
    ]
    got = features.apply(rows, table)
    assert [r.get("schemaId") or r.get("name") for r in got[:3]] == ["fs-car", "dup", "bare"]
    assert got[3] == {
        "uuid": "4",
        "schemaId": "fs-w",
        "answer": {"confidence": 0.5, "schemaId": "fs-sun"},
    }
    assert got[4]["answer"] == {"name": "rain"} and got[5] == rows[5]


@pytest.mark.trainer
@pytest.mark.parametrize("with_ids", [True, False])
def test_predictions_name_features_by_schema_id_when_the_export_has_it(seed, with_ids):
    run = seed("text_multi_classification", n_rows=40, min_examples_per_class=1, epochs=1)
    if not with_ids:
        rows = _strip_schema_ids(copy.deepcopy(run.dataset.rows))
        run.fake.add_model_run(run.run_id, model_id="model-1", rows=rows)
    assert run.main("run") == 0
    assert run.summary()["rows_rejected"] == 0
    shapes = [r for r in run.fake.accepted_predictions(run.run_id) if "metricValue" not in r]
    assert shapes
    feature = run.dataset.feature_name
    if with_ids:
        exported = features.collect(run.dataset.rows)["features"][feature]
        assert all(r["schemaId"] == exported for r in shapes)
        assert all("schemaId" in a and "name" not in a for r in shapes for a in r["answer"])
    else:
        assert all(r["name"] == feature and "schemaId" not in r for r in shapes)
