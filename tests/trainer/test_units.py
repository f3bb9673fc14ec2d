"""The trainer's pure parts, without torch or a server: rows, splits, hyperparameters, NER
offsets, prediction and metric rows, metrics, the termination message, media, settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lbtrain import contract
from lbtrain_trainer import hyperparams, media, metrics, predictions, summary, synthetic
from lbtrain_trainer.detection_metrics import average_precision, evaluate, iou
from lbtrain_trainer.errors import BadInputError, ConfigError
from lbtrain_trainer.manifest import Example, PreparedDataset
from lbtrain_trainer.ner_tags import IGNORE, Span, spans_to_tags, tags_to_spans
from lbtrain_trainer.outputs import RowOutput, ScoredBox
from lbtrain_trainer.rows import Box, Entity, parse_row, utf16_to_codepoints
from lbtrain_trainer.settings import normalize_model_type, resolve
from lbtrain_trainer.splits import Split, hash_split, parse_split

# --- export rows and splits ----------------------------------------------------------------


@pytest.mark.parametrize("model_type", contract.MODEL_TYPES)
def test_synthetic_rows_parse_back(model_type):
    dataset = synthetic.make_dataset(model_type, 10, model_run_id="mr-9", model_id="m-9")
    parsed = [parse_row(r, "mr-9", "m-9") for r in dataset.rows]
    assert all(p.labelled for p in parsed)
    assert [p.split for p in parsed][:10] == [Split.TRAIN] * 6 + [Split.VALIDATION, Split.TEST] * 2
    found = set()
    for p in parsed:
        found |= {b.name for b in p.boxes} | {e.name for e in p.entities}
        found |= {a for c in p.classifications for a in c.answers}
    assert found <= set(dataset.classes) and found
    if model_type == "ner":
        for p in parsed:
            for entity in p.entities:  # inclusive end
                assert p.row_data[entity.start : entity.end + 1] == entity.token


def test_parse_row_finds_the_run_without_model_id_and_reads_shapes():
    row = {
        "data_row": {"id": "dr-1", "global_key": "gk", "row_data": "https://x/1.png"},
        "experiments": {
            "model-a": {"runs": {"other": {}}},
            "model-b": {
                "runs": {
                    "mr-1": {
                        "split": {"name": "TEST"},
                        "labels": [
                            {
                                "annotations": {
                                    "objects": [
                                        {
                                            "name": "car",
                                            "bounding_box": {
                                                "top": 1,
                                                "left": 2,
                                                "height": 3,
                                                "width": 4,
                                            },
                                        },
                                        {
                                            "name": "per",
                                            "location": {"start": 0, "end": 4, "token": "Alice"},
                                        },
                                    ],
                                    "classifications": [
                                        {"name": "q", "radio_answer": {"name": "yes"}},
                                        {
                                            "name": "c",
                                            "checklist_answers": [{"name": "a"}, {"value": "b"}],
                                        },
                                    ],
                                }
                            }
                        ],
                    }
                }
            },
        },
    }
    parsed = parse_row(row, "mr-1")
    assert parsed.split == Split.TEST and parsed.global_key == "gk"
    assert parsed.boxes == (Box("car", 2.0, 1.0, 4.0, 3.0),)
    assert parsed.entities == (Entity("per", 0, 4, "Alice"),)
    assert [(c.name, c.kind, c.answers) for c in parsed.classifications] == [
        ("q", "radio", ("yes",)),
        ("c", "checklist", ("a", "b")),
    ]
    assert not parse_row({"data_row": {"id": "x"}}, "mr-1").labelled


def test_malformed_annotation_is_bad_input_with_row_id():
    row = {
        "data_row": {"id": "dr-bad"},
        "experiments": {
            "m": {
                "runs": {
                    "r": {
                        "labels": [
                            {
                                "annotations": {
                                    "objects": [{"name": "car", "bounding_box": {"top": 1}}]
                                }
                            }
                        ]
                    }
                }
            }
        },
    }
    with pytest.raises(BadInputError, match="dr-bad"):
        parse_row(row, "r")


def test_split_values_and_hash_split():
    assert parse_split("training") == Split.TRAIN and parse_split("VALIDATION") == Split.VALIDATION
    assert parse_split({"name": "test"}) == Split.TEST
    assert parse_split("UNASSIGNED") is None and parse_split(None) is None
    ids = [f"row-{i}" for i in range(2000)]
    first = [hash_split(i, 0.1, 0.2) for i in ids]
    assert first == [hash_split(i, 0.1, 0.2) for i in ids]  # deterministic
    assert 0.15 < first.count(Split.TEST) / 2000 < 0.25
    assert 0.06 < first.count(Split.VALIDATION) / 2000 < 0.14


def test_utf16_offsets_convert_to_python_indices():
    text = "😀 Alice"  # the emoji is two UTF-16 code units
    assert utf16_to_codepoints(text, 3, 7) == (2, 6)
    assert text[2:7] == "Alice"


# --- hyperparameters and settings --------------------------------------------------------------


def test_labelbox_config_overrides_template_and_small_defaults_apply():
    hp, ignored = hyperparams.resolve_hyperparameters(
        "ner",
        {"model_size": "small", "epochs": 4, "batch_size": 2},
        {"epochs": "7", "learning_rate": 0.01, "colour": "red", hyperparams.RESULTS_KEY: {"x": 1}},
    )
    assert (hp.epochs, hp.batch_size, hp.learning_rate) == (7, 2, 0.01)
    assert hp.image_size == hyperparams.SMALL_DEFAULTS["image_size"]
    assert ignored == ["colour"]
    production, _ = hyperparams.resolve_hyperparameters("bounding_box", {}, None)
    assert production.model_size == "production" and production.image_size == 800
    text, _ = hyperparams.resolve_hyperparameters("text_multi_classification", {}, None)
    assert (text.batch_size, text.learning_rate) == (32, 3e-5)  # production text defaults
    small_text, _ = hyperparams.resolve_hyperparameters(
        "text_multi_classification", {"model_size": "small"}
    )
    assert small_text.batch_size == hyperparams.SMALL_DEFAULTS["batch_size"]


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": "many"},
        {"epochs": 0},
        {"model_size": "huge"},
        {"bf16": "maybe"},
        {"test_fraction": 0.6, "validation_fraction": 0.5},
    ],
)
def test_bad_hyperparameters_are_bad_input(bad):
    with pytest.raises(BadInputError):
        hyperparams.resolve_hyperparameters("ner", {}, bad)


def test_hyperparameters_round_trip(tmp_path):
    hp, _ = hyperparams.resolve_hyperparameters("ner", {"model_size": "small"})
    hyperparams.save(hp, tmp_path / "hp.json")
    assert hyperparams.load(tmp_path / "hp.json") == hp


def test_settings_flags_win_over_environment_and_names_normalise():
    env = {
        contract.ENV_MODEL_RUN_ID: "env-run",
        contract.ENV_MODEL_TYPE: "Text_multi_classification",
        contract.ENV_HYPERPARAMETERS: '{"epochs": 2}',
        contract.ENV_ALLOW_HUB_DOWNLOAD: "true",
    }
    settings = resolve({"model_run_id": "flag-run"}, env)
    assert settings.model_run_id == "flag-run"
    assert settings.model_type == "text_multi_classification"
    assert settings.hyperparameters == {"epochs": 2} and settings.allow_hub_download
    assert settings.workspace == Path(contract.DEFAULT_WORKSPACE)
    with pytest.raises(ConfigError):
        normalize_model_type("image_knn_classification")
    with pytest.raises(ConfigError):
        resolve({}, {**env, contract.ENV_HYPERPARAMETERS: "[1]"})


# --- NER tags ------------------------------------------------------------------------------


def test_ner_offsets_round_trip_through_a_trained_wordpiece_tokenizer(tmp_path):
    pytest.importorskip("tokenizers")
    from lbtrain_trainer.text_encoding import TextEncoder, train_wordpiece

    dataset = synthetic.make_dataset("ner", 30)
    rows = [parse_row(r, "mr-1", "model-1") for r in dataset.rows]
    texts = [r.row_data for r in rows]
    train_wordpiece(texts, 300, tmp_path / "tok.json")
    encoder = TextEncoder.from_file(tmp_path / "tok.json", 64)
    encoded = encoder.encode(texts)
    classes = dataset.classes
    for i, row in enumerate(rows):
        spans = [(e.name, e.start, e.end) for e in row.entities]
        tags = spans_to_tags(encoded.offsets[i], encoded.special[i], spans, classes)
        assert tags[0] == IGNORE  # [CLS]
        decoded = tags_to_spans(
            encoded.offsets[i], encoded.special[i], tags, [1.0] * len(tags), classes
        )
        assert sorted((s.name, s.start, s.end) for s in decoded) == sorted(spans)
        for span in decoded:  # Labelbox's inclusive end covers exactly the entity text
            assert row.row_data[span.start : span.end + 1] in (synthetic.PEOPLE + synthetic.CITIES)


def test_wordpiece_vocabulary_is_deterministic_and_spells_every_word(tmp_path):
    """Each torchrun rank and each retry builds its own tokenizer: it must be the same one (the
    tokenizers trainer numbered and merged in hash-map order, different in every process)."""
    pytest.importorskip("tokenizers")
    import subprocess
    import sys

    from lbtrain_trainer.text_encoding import TextEncoder, train_wordpiece

    texts = [
        parse_row(r, "mr-1", "model-1").row_data
        for r in synthetic.make_dataset("text_multi_classification", 60).rows
    ]
    train_wordpiece(texts, 120, tmp_path / "a.json")
    code = (
        "import json, sys; from pathlib import Path; "
        "from lbtrain_trainer.text_encoding import train_wordpiece; "
        "train_wordpiece(json.loads(sys.argv[1]), 120, Path(sys.argv[2]))"
    )
    subprocess.run(
        [sys.executable, "-c", code, json.dumps(texts), str(tmp_path / "b.json")],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        check=True,
        timeout=120,
    )
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    encoder = TextEncoder.from_file(tmp_path / "a.json", 64)
    assert encoder.vocab_size <= 120  # every word fits: fewer tokens than the budget
    unk = encoder.tokenizer.token_to_id("[UNK]")
    assert all(unk not in ids for ids in encoder.encode(texts).ids)
    assert encoder.tokenizer.token_to_id("the") is not None  # frequent words are whole tokens


def test_tags_to_spans_is_lenient_and_averages_confidence():
    offsets = [(0, 0), (0, 3), (4, 7), (8, 10), (0, 0)]
    special = [1, 0, 0, 0, 1]
    # I-person without a B, then B-city: two entities.
    spans = tags_to_spans(
        offsets, special, [0, 2, 2, 3, 0], [1, 0.5, 0.7, 0.9, 1], ["person", "city"]
    )
    assert [(s.name, s.start, s.end) for s in spans] == [("person", 0, 6), ("city", 8, 9)]
    assert [s.confidence for s in spans] == pytest.approx([0.6, 0.9])


# --- prediction and metric rows ------------------------------------------------------------


def _example(**kw):
    return Example(data_row_id="dr-1", global_key=None, split=Split.TEST, media="m", **kw)


def test_classification_rows_have_labelbox_shapes():
    classes = ("a", "b", "c")
    single = predictions.classification_rows(
        "mr",
        "q",
        classes,
        _example(labels=("b",)),
        RowOutput("dr-1", (0.1, 0.7, 0.2)),
        ["b"],
        multi=False,
    )
    assert single[0] == {
        "uuid": single[0]["uuid"],
        "dataRow": {"id": "dr-1"},
        "name": "q",
        "answer": {"name": "b", "confidence": 0.7},
    }
    assert single[1]["metricName"] == "accuracy" and single[1]["metricValue"] == 1.0
    assert [r["metricValue"] for r in single[2:]] == [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 0]]
    multi = predictions.classification_rows(
        "mr",
        "tags",
        classes,
        _example(labels=("a", "c")),
        RowOutput("dr-1", (0.9, 0.6, 0.1)),
        ["a", "b"],
        multi=True,
    )
    assert multi[0]["answer"] == [
        {"name": "a", "confidence": 0.9},
        {"name": "b", "confidence": 0.6},
    ]
    assert multi[1]["metricName"] == "jaccard" and multi[1]["metricValue"] == pytest.approx(
        1 / 3, abs=1e-4
    )
    again = predictions.classification_rows(
        "mr",
        "q",
        classes,
        _example(labels=("b",)),
        RowOutput("dr-1", (0.1, 0.7, 0.2)),
        ["b"],
        multi=False,
    )
    assert again[0]["uuid"] == single[0]["uuid"]  # stable: a re-upload replaces


def test_ner_rows_keep_inclusive_end_and_avoid_reserved_metric_names():
    example = _example(entities=(Entity("person", 0, 4), Entity("city", 14, 18)))
    output = RowOutput("dr-1", spans=(Span("person", 0, 4, 0.9), Span("city", 13, 18, 0.5)))
    rows = predictions.ner_rows("mr", ("city", "person"), example, output)
    entity_rows = [r for r in rows if "location" in r]
    assert entity_rows[0]["location"] == {"start": 0, "end": 4}
    assert entity_rows[0]["classifications"] == []
    metric_rows = [r for r in rows if "metricValue" in r]
    assert all(r.get("metricName") not in predictions.RESERVED_METRIC_NAMES for r in metric_rows)
    by_feature = {r.get("featureName"): r["metricValue"] for r in metric_rows}
    assert by_feature["person"] == [1, 0, 0, 0] and by_feature["city"] == [0, 1, 0, 1]
    assert by_feature[None] == 0.5  # entity F1 of the row


def test_detection_rows_filter_by_score_and_use_pixels():
    example = _example(boxes=(Box("car", 10, 10, 20, 20),), width=100, height=100)
    output = RowOutput(
        "dr-1", boxes=(ScoredBox("car", 11, 10, 20, 20, 0.9), ScoredBox("car", 60, 60, 10, 10, 0.1))
    )
    rows = predictions.detection_rows("mr", ("car",), example, output, score_threshold=0.3)
    assert rows[0]["bbox"] == {"top": 10, "left": 11, "height": 20, "width": 20}
    assert rows[0]["confidence"] == 0.9 and len([r for r in rows if "bbox" in r]) == 1
    assert [r["metricValue"] for r in rows if r.get("aggregation") == "CONFUSION_MATRIX"] == [
        [1, 0, 0, 0]
    ]


# --- metrics -------------------------------------------------------------------------------


def test_single_label_metrics_by_hand():
    result = metrics.single_label([0, 0, 1, 2], [0, 1, 1, 2], ["a", "b", "c"])
    assert result["accuracy"] == 0.75
    assert result["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}
    assert result["macro_f1"] == round((2 / 3 + 2 / 3 + 1) / 3, 4)
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_multi_label_metrics_and_threshold_tuning():
    result = metrics.multi_label([{"a"}, {"a", "b"}], [{"a"}, {"a"}], ["a", "b"])
    assert result["micro_f1"] == 0.8 and result["subset_accuracy"] == 0.5
    thresholds = metrics.tune_thresholds(
        [(0.3, 0.9), (0.35, 0.1), (0.1, 0.8)], [{"a"}, {"a"}, set()], ["a", "b"], 0.5
    )
    assert 0.1 < thresholds[0] <= 0.3  # separates 0.3/0.35 from 0.1
    assert thresholds[1] == 0.5  # no positive for b: default


def test_span_metrics():
    result = metrics.spans([{("p", 0, 4), ("c", 6, 9)}], [{("p", 0, 4), ("c", 6, 8)}], ["c", "p"])
    assert result["micro_f1"] == 0.5 and result["per_class"]["p"]["f1"] == 1.0


def test_detection_average_precision_by_hand():
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(1 / 3)
    truth = [[(0, 0, 10, 10)], [(0, 0, 10, 10)]]
    # one hit (0.9), one miss (0.8), then the second hit (0.7): AP = 0.5*1 + 0.5*(2/3)
    dets = [[((0, 0, 10, 10), 0.9), ((50, 50, 5, 5), 0.8)], [((1, 0, 10, 10), 0.7)]]
    assert average_precision(truth, dets, 0.5) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision([[], []], dets, 0.5) is None
    result = evaluate([[("car", (0, 0, 10, 10))]], [[("car", (0, 0, 10, 10), 0.9)]], ["car", "bus"])
    assert result["map50"] == 1.0 and result["per_class"]["bus"] == {"ap50": 0.0, "support": 0}


# --- termination message ---------------------------------------------------------------------


def test_termination_message_always_fits_and_parses(tmp_path):
    big = {
        "status": "ok",
        "metrics": {"accuracy": 0.9},
        "per_class": {f"class-{i}": {"f1": 0.5} for i in range(500)},
        "error": "x" * 10_000,
    }
    data = summary.write(big, tmp_path / "term")
    assert len(data) <= contract.TERMINATION_MESSAGE_MAX_BYTES
    parsed = json.loads((tmp_path / "term").read_bytes())
    assert parsed["status"] == "ok" and parsed["truncated"] and "per_class" not in parsed
    small = {"status": "ok", "metrics": {"accuracy": 0.9}}
    assert json.loads(summary.encode(small)) == small


# --- media ---------------------------------------------------------------------------------


def test_media_download_shrinks_images_and_records_broken_ones(tmp_path, fake):
    pytest.importorskip("PIL")
    from PIL import Image

    image = Image.new("RGB", (400, 200), (255, 0, 0))
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    good = fake.add_media("units/big.png", buffer.getvalue(), "image/png")
    summary = media.download_all(
        [
            ("dr-good", good),
            ("dr-404", fake.base_url + "/media/nothing.png"),
            ("dr-text", fake.add_media("units/t.png", b"hello", "image/png")),
            ("dr-empty", ""),
        ],
        "image",
        tmp_path,
        max_side=100,
        concurrency=2,
        allow_loopback=True,
    )
    assert (summary.fetched, summary.broken, summary.kept) == (1, 3, 0)
    with media.MediaIndex(tmp_path) as index:
        good_entry, e404, etext, eempty = (
            index.get(i) for i in ("dr-good", "dr-404", "dr-text", "dr-empty")
        )
    assert good_entry is not None and e404 and etext and eempty
    assert (good_entry.width, good_entry.height) == (400, 200)
    with Image.open(tmp_path / str(good_entry.path)) as stored:
        assert stored.size == (100, 50)
    assert "404" in str(e404.error)
    assert "decodable" in str(etext.error) and eempty.error


def test_inline_text_and_prepared_dataset_round_trip(tmp_path):
    media.download_all(
        [("dr-1", "Alice went home."), ("dr-2", "data:text/plain,B%C3%B6b")],
        "text",
        tmp_path / "media",
        max_side=1,
        concurrency=1,
        allow_loopback=True,
    )
    with media.MediaIndex(tmp_path / "media") as index:
        paths = [str(getattr(index.get(i), "path", None)) for i in ("dr-1", "dr-2")]
    assert (tmp_path / "media" / paths[0]).read_text() == "Alice went home."
    assert (tmp_path / "media" / paths[1]).read_text() == "Böb"
    dataset = PreparedDataset(
        "ner",
        "",
        ("person",),
        [
            Example(
                "dr-1", None, Split.TRAIN, "media/x", entities=(Entity("person", 0, 4, "Alice"),)
            )
        ],
    )
    dataset.save(tmp_path / "d.json")
    assert PreparedDataset.load(tmp_path / "d.json") == dataset
