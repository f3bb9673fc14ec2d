"""Every model type's small model, end to end against the fake Labelbox, on a CPU.

``export``, ``prepare`` and ``train`` run as three separate processes that share only the
workspace and are configured by the environment contract alone, as the operator runs the
three containers of a pod. The model must reach the held-out bars of issue 5 on the test
split, and predictions, metrics, config and the termination summary must land in Labelbox's
formats.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from lbtrain import contract
from lbtrain_trainer import features
from lbtrain_trainer.hyperparams import RESULTS_KEY

pytestmark = pytest.mark.trainer

# 100 rows: 60 train / 20 validation / 20 test (the synthetic split cycle), so a bar of 0.9
# allows two wrong test rows. Everything is seeded (data seed 0, hyperparameter seed 0) and
# deterministic on a given torch build.
ROWS = 100
# The held-out bars of issue 5: (metric in the termination summary, bar).
BARS = {
    "image_single_classification": ("accuracy", 0.9),
    "image_multi_classification": ("micro_f1", 0.8),
    "bounding_box": ("map50", 0.5),
    "text_single_classification": ("accuracy", 0.9),
    # Chance for multi-label micro-F1 is not 1/3: predicting every class for every row scores
    # 2p/(1+p), p the share of positive (row, class) pairs: 8/13 = 0.62 in expectation here,
    # 0.605 on these 20 test rows (see _all_positive_micro_f1); guessing at the base rate
    # scores p = 0.44. The suggested 0.6 would not beat the trivial predictor, so the bar is 0.8,
    # and the test also asks for 0.15 above the trivial predictor on the actual test rows.
    "text_multi_classification": ("micro_f1", 0.8),
    "ner": ("micro_f1", 0.8),  # entity-level exact-match (span) F1
}
HEADLINE = {
    "image_single_classification": "accuracy",
    "image_multi_classification": "macro_f1",
    "bounding_box": "map50",
    "text_single_classification": "accuracy",
    "text_multi_classification": "macro_f1",
    "ner": "macro_f1",
}
# Epochs of the small models for this data (the rest are SMALL_DEFAULTS). The margin is not
# one lucky seed: with hyperparameter seeds 1-3 in place of 0 every type scored 1.0 except
# text_single_classification (seeds 0-5: 0.95-1.0 accuracy).
HP: dict[str, dict[str, Any]] = {
    "image_single_classification": {"epochs": 6},
    "image_multi_classification": {"epochs": 8},
    "bounding_box": {"epochs": 8},
    "text_single_classification": {"epochs": 8},
    "text_multi_classification": {"epochs": 8},
    "ner": {"epochs": 6},
}


def _all_positive_micro_f1(truth: list[set[str]], classes: tuple[str, ...]) -> float:
    """Micro-F1 of predicting every class for every row: precision p, recall 1."""
    p = sum(len(t) for t in truth) / (len(truth) * len(classes))
    return 2 * p / (1 + p)


def _check_prediction_row(
    model_type: str, row: dict[str, Any], feature: str, classes: tuple[str, ...], ids: Any
) -> None:
    """The export carried schema ids (``ids``: features.collect), so rows name features by
    them."""
    assert set(row["dataRow"]) == {"id"}
    assert len(row["uuid"]) == 36
    assert "name" not in row
    answers = {ids["answers"][feature][c] for c in classes} if feature in ids["answers"] else {}
    tools = {ids["features"][c] for c in classes if c in ids["features"]}
    if model_type.endswith("single_classification"):
        assert row["schemaId"] == ids["features"][feature]
        assert row["answer"]["schemaId"] in answers
        assert 0 <= row["answer"]["confidence"] <= 1
    elif model_type.endswith("multi_classification"):
        assert row["schemaId"] == ids["features"][feature]
        assert isinstance(row["answer"], list) and row["answer"]
        assert all(a["schemaId"] in answers and 0 <= a["confidence"] <= 1 for a in row["answer"])
    elif model_type == "bounding_box":
        assert row["schemaId"] in tools
        assert set(row["bbox"]) == {"top", "left", "height", "width"}
        assert row["bbox"]["width"] > 0 and row["bbox"]["height"] > 0
        assert 0 <= row["confidence"] <= 1
    else:
        assert row["schemaId"] in tools
        assert set(row["location"]) == {"start", "end"}
        assert row["location"]["start"] <= row["location"]["end"]
        assert 0 <= row["confidence"] <= 1


def _run_of(row: dict[str, Any], run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = row["experiments"]["model-1"]["runs"][run_id]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("model_type", contract.MODEL_TYPES)
def test_stages_as_separate_processes_reach_the_held_out_bars(seed, model_type):
    hp = HP[model_type]
    run = seed(model_type, ROWS, **hp)

    assert run.process("export") == contract.EXIT_OK, run.last_stderr[-3000:]
    exported = run.summary()
    assert exported["stage"] == "export" and exported["status"] == "ok"
    assert exported["rows"] == ROWS and exported["media_broken"] == 0
    assert (run.workspace / "export.ndjson").exists()
    assert (run.workspace / "hyperparameters.json").exists()

    assert run.process("prepare") == contract.EXIT_OK, run.last_stderr[-3000:]
    prepared = run.summary()
    assert prepared["stage"] == "prepare" and prepared["status"] == "ok"
    assert prepared["splits"] == {"train": 60, "validation": 20, "test": 20}
    assert (run.workspace / "prepared" / "dataset.json").exists()

    assert run.process("train") == contract.EXIT_OK, run.last_stderr[-3000:]
    summary = run.summary()
    metric, bar = BARS[model_type]
    assert summary["stage"] == "train" and summary["status"] == "ok"
    assert summary["model_type"] == model_type and summary["model_size"] == "small"
    assert summary["headline_metric"] == HEADLINE[model_type]
    assert summary["metrics"]["count"] == 20
    assert summary["metrics"][metric] >= bar, summary["metrics"]
    assert summary["epochs_completed"] == hp["epochs"]
    weights = run.artifacts / "model" / "weights.pt"
    assert summary["artifacts"]["weights"] == str(weights)
    assert weights.stat().st_size > 0
    test_rows = [r for r in run.dataset.rows if _run_of(r, run.run_id)["split"] == "test"]
    if model_type.endswith("multi_classification"):
        truth = [
            {
                a["name"]
                for a in _run_of(r, run.run_id)["labels"][0]["annotations"]["classifications"][0][
                    "checklist_answers"
                ]
            }
            for r in test_rows
        ]
        trivial = _all_positive_micro_f1(truth, run.dataset.classes)
        assert summary["metrics"]["micro_f1"] >= trivial + 0.15, (trivial, summary["metrics"])

    rows = run.predictions()
    test_ids = {r["data_row"]["id"] for r in test_rows}
    predictions = [r for r in rows if "metricValue" not in r]
    metrics = [r for r in rows if "metricValue" in r]
    assert predictions and metrics and all(len(r["uuid"]) == 36 for r in rows)
    held_out = [r for r in metrics if r["metricName"].endswith("_test")]
    assert {r["dataRow"]["id"] for r in held_out} == test_ids  # evaluated on the test split
    # predict_splits "all": every row has metrics, each named after its split
    assert {r["dataRow"]["id"] for r in metrics} == {r["data_row"]["id"] for r in run.dataset.rows}
    ids = features.collect(run.dataset.rows)
    for row in predictions:
        _check_prediction_row(model_type, row, run.dataset.feature_name, run.dataset.classes, ids)
    for row in metrics:
        assert row["aggregation"] in ("ARITHMETIC_MEAN", "CONFUSION_MATRIX")
        if row["aggregation"] == "CONFUSION_MATRIX":
            assert len(row["metricValue"]) == 4
    assert len(run.fake.imports(run.run_id)) == 1
    assert not run.fake.import_errors(run.run_id, run.fake.imports(run.run_id)[0])

    headline = HEADLINE[model_type]
    results = run.fake.config(run.run_id)[RESULTS_KEY]
    assert results[headline] == summary["metrics"][headline]
    assert set(results["metrics"]["per_class"]) == set(run.dataset.classes)
    assert results["hyperparameters"]["model_size"] == "small"
    assert results["throughput"]["train_examples_per_s"] > 0
    # every epoch was validated (validate_every_epochs 1) on the headline metric
    history = results["loss_history"]
    assert len(history) == results["epochs_completed"]
    assert {e.get("validation_metric") for e in history} == {headline}
    assert all(0.0 <= e["validation_value"] <= 1.0 for e in history)
    card = json.loads((run.artifacts / "model" / "model.json").read_text())
    assert card["classes"] == list(run.dataset.classes)
    if model_type.startswith("text") or model_type == "ner":
        assert (run.artifacts / "model" / "tokenizer.json").exists()
