"""The stage contract: separate containers, exit codes, termination messages, bad data (65),
resume from checkpoint, uploads that Labelbox rejects, and rank-0-only side effects."""

from __future__ import annotations

import copy
import json

import pytest

from lbtrain import contract
from lbtrain_trainer import cli
from lbtrain_trainer.hyperparams import RESULTS_KEY


def _run_of(row, run):
    return row["experiments"]["model-1"]["runs"][run.run_id]


def test_stages_run_as_separate_processes_share_only_the_workspace(seed):
    pytest.importorskip("torch")
    run = seed("ner", config={"epochs": 6, "learning_rate": 0.004, "note": "user text"})
    assert run.main("export") == 0
    exported = run.summary()
    assert exported["stage"] == "export" and exported["rows"] == 40
    assert exported["ignored_hyperparameters"] == ["note"]
    hp = json.loads((run.workspace / "hyperparameters.json").read_text())
    assert hp["epochs"] == 6 and hp["learning_rate"] == 0.004  # the model run config wins

    assert run.main("prepare") == 0
    prepared = run.summary()
    assert prepared["splits"] == {"train": 24, "validation": 8, "test": 8}
    assert prepared["classes"] == ["city", "person"]

    assert run.main("train") == 0
    trained = run.summary()
    assert trained["epochs_completed"] == 6
    assert trained["artifacts"]["weights"].startswith(str(run.artifacts))
    assert (run.artifacts / "model" / "tokenizer.json").exists()
    config = run.fake.config(run.run_id)
    assert config["note"] == "user text"  # the user's config survives
    assert config[RESULTS_KEY]["hyperparameters"]["epochs"] == 6


def test_train_without_prepare_is_a_usage_error(seed):
    run = seed("text_single_classification")
    assert run.main("train") == 2
    assert "prepare" in run.summary()["error"] or "export" in run.summary()["error"]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        ("few", "class 'triangle' has 1 training example"),
        ("broken_media", "could not be loaded"),
        ("no_labels", "no data row of the model run has a label"),
        ("one_class", "at least two classes"),
    ],
)
def test_bad_data_exits_65_naming_rows(seed, mutate, needle):
    run = seed("image_single_classification")
    rows = copy.deepcopy(run.dataset.rows)
    expected_ids: list[str] = []
    if mutate == "few":
        keep_one = True
        kept = []
        for row in rows:
            label = _run_of(row, run)["labels"][0]["annotations"]["classifications"][0]
            if label["radio_answer"]["name"] == "triangle":
                if not keep_one or _run_of(row, run)["split"] != "training":
                    continue
                keep_one = False
                expected_ids.append(row["data_row"]["id"])
            kept.append(row)
        rows = kept
    elif mutate == "broken_media":
        rows[3]["data_row"]["row_data"] = run.fake.base_url + "/media/missing.png"
        rows[5]["data_row"]["row_data"] = run.fake.add_media(
            "x/not-an-image.png", b"nope", "image/png"
        )
        expected_ids = [rows[3]["data_row"]["id"], rows[5]["data_row"]["id"]]
    elif mutate == "no_labels":
        for row in rows:
            _run_of(row, run)["labels"] = []
        expected_ids = [rows[0]["data_row"]["id"]]
    else:
        for row in rows:
            answer = _run_of(row, run)["labels"][0]["annotations"]["classifications"][0]
            answer["radio_answer"]["name"] = "circle"
    run.fake.add_model_run(run.run_id, model_id="model-1", rows=rows)

    assert run.main("run") == contract.EXIT_BAD_INPUT
    summary = run.summary()
    assert summary["status"] == "failed" and summary["exit_code"] == 65
    assert summary["stage"] == "prepare"
    assert needle in summary["error"]
    for row_id in expected_ids:
        assert row_id in summary["error"]
        assert row_id in summary["row_ids"]
    assert not run.fake.imports(run.run_id)


def test_ner_offsets_that_do_not_match_the_text_exit_65(seed):
    run = seed("ner")
    rows = copy.deepcopy(run.dataset.rows)
    entity = _run_of(rows[2], run)["labels"][0]["annotations"]["objects"][0]
    entity["location"]["end"] += 40  # past the end of the sentence
    run.fake.add_model_run(run.run_id, model_id="model-1", rows=rows)
    assert run.main("export") == 0
    assert run.main("prepare") == 65
    assert rows[2]["data_row"]["id"] in run.summary()["error"]


def test_bad_hyperparameter_in_labelbox_config_exits_65(seed):
    run = seed("text_single_classification", config={"epochs": "many"})
    assert run.main("export") == 65
    assert "epochs" in run.summary()["error"]


def test_unknown_model_run_is_bad_input(seed):
    run = seed("ner")
    run.run_id = "mr-does-not-exist"
    assert run.main("export") == 65
    assert "does not exist" in run.summary()["error"]


def test_labelbox_outage_is_retriable(seed):
    run = seed("text_single_classification")
    run.fake.fail("auth", times=1)
    assert run.main("export") == 1
    assert run.summary()["status"] == "failed"


def test_rejected_rows_are_counted_and_only_an_upload_with_none_accepted_fails(fake, seed):
    from lbtrain_trainer import labelbox_io
    from lbtrain_trainer.errors import BadInputError
    from lbtrain_trainer.settings import Settings

    run = seed("ner", n_rows=4)
    settings = Settings(
        model_run_id=run.run_id,
        model_type="ner",
        workspace=run.workspace,
        api_key="trainer-test-key",
        endpoint=fake.endpoint,
        rest_endpoint=fake.rest_endpoint,
    )
    model_run = labelbox_io.get_model_run(settings)
    good = {
        "uuid": "u1",
        "dataRow": {"id": run.dataset.rows[0]["data_row"]["id"]},
        "name": "person",
        "location": {"start": 0, "end": 3},
    }
    bad = {**good, "uuid": "u2", "dataRow": {"id": "not-in-this-run"}}
    result = labelbox_io.upload_predictions(model_run, [good, bad], "one")
    assert (result.rows, result.accepted, result.rejected) == (2, 1, 1)
    assert (
        "not-in-this-run" in result.first_errors[0] and "DataRowNotFound" in result.first_errors[0]
    )
    with pytest.raises(BadInputError, match="accepted 1 of 2"):  # below the share asked for
        labelbox_io.upload_predictions(model_run, [good, bad], "two", min_accepted_fraction=0.9)
    with pytest.raises(BadInputError, match="accepted 0 of 1"):
        labelbox_io.upload_predictions(model_run, [bad], "three")
    # An import Labelbox failed as a whole (here: an unreadable file under the name the trainer
    # would use) is not read as "no rows accepted": the chunk goes again under a new name.
    garbage = fake.add_media("garbage.ndjson", b"not json\n", "application/x-ndjson")
    failed = model_run.add_predictions("lbtrain-four-000", garbage)
    failed.wait_till_done()
    result = labelbox_io.upload_predictions(model_run, [{**good, "uuid": "u9"}], "four")
    assert result.imports == ["lbtrain-four-000-r1"] and result.accepted == 1


@pytest.mark.trainer
def test_resume_skips_finished_epochs_and_does_not_upload_twice(seed, monkeypatch):
    from lbtrain_trainer import checkpoint

    run = seed("image_single_classification", epochs=3)
    original = checkpoint.Checkpointer.save
    saves = []

    def crash_after_first_epoch(self, state):
        original(self, state)
        saves.append(state.epoch)
        if state.epoch == 1:
            raise RuntimeError("node evicted")

    monkeypatch.setattr(checkpoint.Checkpointer, "save", crash_after_first_epoch)
    assert run.main("run") == 1  # retriable
    assert not run.fake.imports(run.run_id)
    # A new pod: fresh workspace (emptyDir), same artifact destination.
    import shutil

    shutil.rmtree(run.workspace)
    assert run.main("run") == 0
    summary = run.summary()
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_completed"] == 3
    assert saves == [1, 2, 3]  # epoch 1 was not trained again
    assert len(run.fake.imports(run.run_id)) == 1

    # Restarted after everything finished: nothing retrained, nothing uploaded again.
    assert run.main("train") == 0
    assert run.summary()["resumed_from_epoch"] == 3
    assert saves == [1, 2, 3]
    assert len(run.fake.imports(run.run_id)) == 1

    # More epochs requested: continue from the checkpoint, upload the better model.
    assert run.main("run", epochs=4) == 0
    assert run.summary()["resumed_from_epoch"] == 3 and saves == [1, 2, 3, 4]
    assert len(run.fake.imports(run.run_id)) == 2


@pytest.mark.trainer
def test_a_different_label_set_does_not_resume(seed):
    run = seed("image_single_classification", epochs=1)
    assert run.main("run") == 0
    assert run.main("run", epochs=1, feature_name="shape", image_size=48) == 0
    assert run.summary()["resumed_from_epoch"] == 0


@pytest.mark.trainer
def test_only_rank_zero_uploads_and_saves(seed, monkeypatch):
    import torch

    from lbtrain_trainer import runtime, train

    run = seed("image_single_classification", epochs=1)
    assert run.main("export") == 0 and run.main("prepare") == 0
    monkeypatch.setattr(
        train, "setup", lambda hp: runtime.Runtime(torch.device("cpu"), rank=1, world_size=2)
    )
    monkeypatch.setattr(runtime.Runtime, "barrier", lambda self: None)
    # The collectives of a process group this test does not start: rank 0 found no checkpoint
    # (a fresh run), so the broadcast would hand rank 1 nothing to resume from.
    monkeypatch.setattr(train, "load_everywhere", lambda checkpointer, distributed, rank: None)
    monkeypatch.setattr(train, "prepare_model", lambda model, *a, **k: model)
    assert run.main("train") == 0
    assert run.summary() == {
        "model_run_id": run.run_id,
        "stage": "train",
        "status": "ok",
        "rank": 1,
    }
    assert not run.fake.imports(run.run_id)
    assert not (run.artifacts / "checkpoint").exists()
    assert RESULTS_KEY not in run.fake.config(run.run_id)


def test_help_lists_every_environment_variable(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in (
        contract.ENV_MODEL_RUN_ID,
        contract.ENV_HYPERPARAMETERS,
        contract.ENV_PRETRAINED,
        contract.ENV_ALLOW_HUB_DOWNLOAD,
        contract.ENV_TERMINATION_MESSAGE_PATH,
    ):
        assert name in text
    assert "65" in text


def test_missing_settings_are_a_usage_error(tmp_path, monkeypatch):
    for name in (contract.ENV_MODEL_RUN_ID, contract.ENV_MODEL_TYPE):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "term"
    assert cli.main(["export", "--termination-message-path", str(path)]) == 2
    assert contract.ENV_MODEL_RUN_ID in json.loads(path.read_text())["error"]


def test_unassigned_rows_get_a_stable_hash_split(seed):
    run = seed(
        "text_single_classification",
        n_rows=60,
        assign_splits=False,
        validation_fraction=0.2,
        test_fraction=0.2,
        min_examples_per_class=1,
    )
    assert run.main("export") == 0 and run.main("prepare") == 0
    first = run.summary()["splits"]
    assert sum(first.values()) == 60 and all(first.values())
    dataset = json.loads((run.workspace / "prepared" / "dataset.json").read_text())
    assert run.main("prepare") == 0
    assert json.loads((run.workspace / "prepared" / "dataset.json").read_text()) == dataset


@pytest.mark.slow
@pytest.mark.trainer
def test_torchrun_two_ranks_train_and_only_rank_zero_reports(seed):
    import os
    import subprocess
    import sys
    from pathlib import Path

    run = seed("image_single_classification", epochs=2)
    assert run.main("export") == 0 and run.main("prepare") == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "lbtrain_trainer",
            *run.argv("train"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = run.summary()
    assert summary["status"] == "ok" and summary["throughput"]["world_size"] == 2
    assert len(run.fake.imports(run.run_id)) == 1  # one upload, from rank 0
    assert summary["epochs_completed"] == 2
