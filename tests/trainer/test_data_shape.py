"""Data of the wrong shape for the model type fails ``prepare`` with exit 65, naming the question
(or the annotation or media kind) and the type, before any training: the issue's new user
trained 10 epochs on a checklist question with ``text_single_classification`` and uploaded
radio-shaped answers. Rows labelled only with other shapes in a box run are dropped and counted,
not trained as background. Through the real stages against the fake Labelbox."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from lbtrain import contract
from lbtrain_trainer.modeltypes.base import annotation_mismatch, media_mismatch, question_mismatch
from lbtrain_trainer.prepare import media_of


def _run_of(row: dict[str, Any], run: Any) -> dict[str, Any]:
    found: dict[str, Any] = row["experiments"]["model-1"]["runs"][run.run_id]
    return found


def _annotations(row: dict[str, Any], run: Any) -> dict[str, Any]:
    found: dict[str, Any] = _run_of(row, run)["labels"][0]["annotations"]
    return found


def _fails_in_prepare_before_training(run: Any) -> str:
    assert run.main("run") == contract.EXIT_BAD_INPUT
    summary = run.summary()
    assert summary["status"] == "failed" and summary["stage"] == "prepare"
    assert summary["exit_code"] == contract.EXIT_BAD_INPUT
    assert not run.fake.imports(run.run_id)  # nothing uploaded ...
    assert not run.artifacts.exists()  # ... nor trained
    error: str = summary["error"]
    return error


def test_checklist_answers_for_a_single_label_type_exit_65_before_training(seed):
    run = seed("text_single_classification", 30)
    rows = copy.deepcopy(run.dataset.rows)
    for row in rows:  # the same answers, given through a checklist (one box ticked)
        for cls in _annotations(row, run)["classifications"]:
            cls["checklist_answers"] = [cls.pop("radio_answer")]
    run.fake.add_model_run(run.run_id, model_id="model-1", rows=rows)
    error = _fails_in_prepare_before_training(run)
    assert "no label answers a radio question" in error and "'topic' (checklist)" in error

    # Named as feature_name, the question is still of the wrong kind: the message says which.
    run.hyperparameters["feature_name"] = "topic"
    error = _fails_in_prepare_before_training(run)
    assert "'text_single_classification' learns a radio (one answer) question" in error
    assert "'topic' is answered as checklist (30 labels)" in error


def test_radio_answers_for_a_multi_label_type_exit_65(seed):
    run = seed("text_multi_classification", 30, feature_name="tags")
    rows = copy.deepcopy(run.dataset.rows)
    for row in rows:
        for cls in _annotations(row, run)["classifications"]:
            answers = cls.pop("checklist_answers") or [{"name": "x", "value": "x"}]
            cls["radio_answer"] = answers[0]
            cls["name"] = cls["value"] = "tags"
    run.fake.add_model_run(run.run_id, model_id="model-1", rows=rows)
    error = _fails_in_prepare_before_training(run)
    assert "'text_multi_classification' learns a checklist question" in error
    assert "'tags' is answered as radio (one answer) (30 labels)" in error


def test_a_free_text_question_is_not_a_classification_to_learn(seed):
    run = seed("text_single_classification", 20, feature_name="comment")
    rows = copy.deepcopy(run.dataset.rows)
    for row in rows:
        _annotations(row, run)["classifications"].append(
            {"name": "comment", "value": "comment", "text_answer": {"content": "looks fine"}}
        )
    run.fake.add_model_run(run.run_id, model_id="model-1", rows=rows)
    error = _fails_in_prepare_before_training(run)
    assert "'comment' is answered as free-text (20 labels)" in error


def test_image_rows_for_a_text_type_exit_65_naming_the_rows(seed):
    run = seed("ner", 12)
    rows = copy.deepcopy(run.dataset.rows)
    for row in rows[:3]:
        row["media_attributes"] = {"mime_type": "image/png", "width": 64, "height": 64}
    run.fake.add_model_run(run.run_id, model_id="model-1", rows=rows)
    error = _fails_in_prepare_before_training(run)
    assert "'ner' trains on text, but data rows are image (3 rows)" in error
    for row in rows[:3]:
        assert row["data_row"]["id"] in error


def _polygon(name: str) -> dict[str, Any]:
    points = [{"x": 2.0, "y": 2.0}, {"x": 20.0, "y": 2.0}, {"x": 10.0, "y": 20.0}]
    return {"name": name, "value": name, "annotation_kind": "ImagePolygon", "polygon": points}


def test_polygon_only_rows_in_a_box_run_are_dropped_and_counted(seed, caplog):
    run = seed("bounding_box", 40)
    rows = copy.deepcopy(run.dataset.rows)
    polygon_rows = [row["data_row"]["id"] for row in rows[:5]]
    for row in rows[:5]:
        _annotations(row, run)["objects"] = [_polygon("circle")]
    run.fake.add_model_run(run.run_id, model_id="model-1", rows=rows)
    assert run.main("export") == 0
    with caplog.at_level(logging.WARNING, logger="lbtrain_trainer.prepare"):
        assert run.main("prepare") == 0, run.summary()
    reason = "labelled with other shapes only, no bounding box (polygon)"
    assert run.summary()["dropped_rows"] == {reason: 5}
    assert f"dropped 5 data row(s): {reason}" in caplog.text
    assert polygon_rows[0] in caplog.text


def test_a_box_run_whose_labels_hold_only_polygons_exit_65(seed):
    run = seed("bounding_box", 12)
    rows = copy.deepcopy(run.dataset.rows)
    for row in rows:
        _annotations(row, run)["objects"] = [_polygon("circle")]
    run.fake.add_model_run(run.run_id, model_id="model-1", rows=rows)
    error = _fails_in_prepare_before_training(run)
    assert "'bounding_box' learns bounding_box annotations, but the labels hold only polygon" in (
        error
    )


@pytest.mark.parametrize(
    ("kinds", "fits"),
    [({"radio": 9}, True), ({"checklist": 9}, False), ({"radio": 8, "text": 1}, False)],
)
def test_question_mismatch_is_a_pure_decision(kinds, fits):
    why = question_mismatch("some_type", "radio", "q", kinds)
    assert (why is None) == fits
    if why:
        assert "'some_type'" in why and "'q'" in why


def test_annotation_and_media_mismatches_are_pure_decisions():
    assert annotation_mismatch("t", ("bounding_box",), {}) is None  # no objects: said elsewhere
    assert annotation_mismatch("t", ("bounding_box",), {"bounding_box": 1, "polygon": 3}) is None
    assert "only polygon (3 labels)" in str(
        annotation_mismatch("t", ("bounding_box",), {"polygon": 3})
    )
    assert media_mismatch("t", "text", {"text": 4}) is None
    assert media_mismatch("t", "text", {}) is None  # no MIME types in the export: nothing known
    found = media_mismatch("t", "text", {"text": 4, "video": 1})
    assert found is not None and found[1] == ["video"]


def test_only_mime_types_that_say_what_a_row_is_count():
    assert [media_of(m) for m in ("image/png", "Text/Plain", "video/mp4")] == [
        "image",
        "text",
        "video",
    ]
    assert [media_of(m) for m in ("application/octet-stream", "", None, "png")] == [None] * 4
