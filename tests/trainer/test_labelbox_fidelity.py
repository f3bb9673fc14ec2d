"""The trainer against a strict fake Labelbox (through the real SDK): where splits come from,
uploads that survive rejected rows, and retries that never upload the same predictions twice."""

from __future__ import annotations

import json
from collections import Counter

import labelbox as lb
import pytest

from lbtrain_trainer import checkpoint
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
    # every row of the run got a prediction (predict_splits "all"), with split-named metrics
    predicted = {r["dataRow"]["id"] for r in run.fake.accepted_predictions(run.run_id)}
    assert predicted == {r["data_row"]["id"] for r in run.dataset.rows} - {gone}
    names = {r.get("metricName") for r in run.fake.accepted_predictions(run.run_id)}
    assert {"accuracy", "accuracy_train", "accuracy_validation"} <= names


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
