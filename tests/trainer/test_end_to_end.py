"""Every model type's small model, end to end against the fake Labelbox (export -> prepare ->
train), on a CPU: it learns the synthetic task above chance, and predictions, metrics, config
and the termination summary land in Labelbox's formats."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lbtrain import contract
from lbtrain_trainer.hyperparams import RESULTS_KEY

pytestmark = pytest.mark.trainer

# Headline metric and a floor well above chance for the synthetic data (3 classes: chance is
# 1/3 accuracy; detection and NER have no "chance" and a small model gets well above 0.3).
EXPECT = {
    "image_single_classification": ("accuracy", 0.6),
    "image_multi_classification": ("macro_f1", 0.6),
    "text_single_classification": ("accuracy", 0.6),
    "text_multi_classification": ("macro_f1", 0.5),
    "ner": ("macro_f1", 0.6),
    "bounding_box": ("map50", 0.3),
}
EPOCHS = {"bounding_box": 8, "text_multi_classification": 12}


def _check_prediction_row(
    model_type: str, row: dict[str, Any], feature: str, classes: tuple[str, ...]
) -> None:
    assert set(row["dataRow"]) == {"id"}
    assert len(row["uuid"]) == 36
    if model_type.endswith("single_classification"):
        assert row["name"] == feature
        assert row["answer"]["name"] in classes
        assert 0 <= row["answer"]["confidence"] <= 1
    elif model_type.endswith("multi_classification"):
        assert row["name"] == feature
        assert isinstance(row["answer"], list) and row["answer"]
        assert all(a["name"] in classes and 0 <= a["confidence"] <= 1 for a in row["answer"])
    elif model_type == "bounding_box":
        assert row["name"] in classes
        assert set(row["bbox"]) == {"top", "left", "height", "width"}
        assert row["bbox"]["width"] > 0 and row["bbox"]["height"] > 0
        assert 0 <= row["confidence"] <= 1
    else:
        assert row["name"] in classes
        assert set(row["location"]) == {"start", "end"}
        assert row["location"]["start"] <= row["location"]["end"]
        assert 0 <= row["confidence"] <= 1


@pytest.mark.parametrize("model_type", contract.MODEL_TYPES)
def test_small_model_trains_end_to_end(seed, model_type):
    run = seed(model_type, epochs=EPOCHS.get(model_type, 10))
    assert run.main("run") == contract.EXIT_OK, run.termination.read_text()

    summary = run.summary()
    metric, floor = EXPECT[model_type]
    assert summary["status"] == "ok"
    assert summary["headline_metric"] == metric
    assert summary["metrics"][metric] >= floor, summary["metrics"]
    assert summary["epochs_completed"] == EPOCHS.get(model_type, 10)

    rows = run.predictions()
    test_ids = {
        r["data_row"]["id"]
        for r in run.dataset.rows
        if r["experiments"]["model-1"]["runs"][run.run_id]["split"] == "test"
    }
    predictions = [r for r in rows if "uuid" in r]
    metrics = [r for r in rows if "metricValue" in r]
    assert predictions and metrics
    assert {r["dataRow"]["id"] for r in metrics} == test_ids  # evaluated on the test split
    for row in predictions:
        _check_prediction_row(model_type, row, run.dataset.feature_name, run.dataset.classes)
    for row in metrics:
        assert row["aggregation"] in ("ARITHMETIC_MEAN", "CONFUSION_MATRIX")
        if row["aggregation"] == "CONFUSION_MATRIX":
            assert len(row["metricValue"]) == 4
    assert len(run.fake.imports(run.run_id)) == 1
    assert not run.fake.import_errors(run.run_id, run.fake.imports(run.run_id)[0])

    results = run.fake.config(run.run_id)[RESULTS_KEY]
    assert results[metric] == summary["metrics"][metric]
    assert set(results["metrics"]["per_class"]) == set(run.dataset.classes)
    assert results["hyperparameters"]["model_size"] == "small"
    assert results["throughput"]["train_examples_per_s"] > 0
    card = json.loads((run.artifacts / "model" / "model.json").read_text())
    assert card["classes"] == list(run.dataset.classes)
    assert (run.artifacts / "model" / "weights.pt").stat().st_size > 0
