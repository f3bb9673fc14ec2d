"""The trainer writes artifacts only inside its own destination, checked before it writes.

The operator checks the destination when it builds the Job; the trainer checks again, because
a pod can be started with any environment (a hand-made Job, an older operator). These run the
real `lbtrain trainer` CLI and the real `Destination`, and look at the disk afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lbtrain import contract
from lbtrain_trainer.artifacts import Destination
from lbtrain_trainer.errors import DestinationEscapesError


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("stage", ["export", "train"])
def test_a_destination_outside_its_root_fails_the_stage_before_it_writes(
    tmp_path: Path, stage: str
) -> None:
    shared = tmp_path / "artifacts"  # the volume every run of the template writes into
    other_run = shared / "cother000000000000000000001"
    other_run.mkdir(parents=True)
    (other_run / "model.pt").write_bytes(b"another run's weights")
    before = files_under(tmp_path)
    message = tmp_path / "termination-log"
    env = {
        **os.environ,
        contract.ENV_MODEL_RUN_ID: "cescape000000000000000001",
        contract.ENV_MODEL_TYPE: "text_single_classification",
        contract.ENV_WORKSPACE: str(tmp_path / "workspace"),
        contract.ENV_ARTIFACTS: str(shared / "cescape000000000000000001" / ".." / other_run.name),
        contract.ENV_ARTIFACTS_ROOT: str(shared),
        contract.ENV_TERMINATION_MESSAGE_PATH: str(message),
        # No API key and an unreachable Labelbox: the check must come before either matters.
        contract.ENV_LABELBOX_ENDPOINT: "http://127.0.0.1:1/graphql",
    }
    env.pop(contract.ENV_LABELBOX_API_KEY, None)
    done = subprocess.run(
        [sys.executable, "-m", "lbtrain", "trainer", stage],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == contract.EXIT_DESTINATION_ESCAPES, done.stderr[-2000:]
    report = json.loads(message.read_text())
    assert (report["status"], report["stage"], report["exit_code"]) == ("failed", stage, 77)
    assert "'..' path segment" in report["error"]
    assert files_under(tmp_path) == sorted([*before, "termination-log"])
    assert (other_run / "model.pt").read_bytes() == b"another run's weights"


def test_a_destination_under_its_root_is_accepted(tmp_path: Path) -> None:
    from lbtrain_trainer.settings import resolve

    root = tmp_path / "artifacts"
    settings = resolve(
        {},
        {
            contract.ENV_MODEL_RUN_ID: "cok00000000000000000000001",
            contract.ENV_MODEL_TYPE: "ner",
            contract.ENV_ARTIFACTS: f"{root}/cok00000000000000000000001",
            contract.ENV_ARTIFACTS_ROOT: str(root),
        },
    )
    assert settings.artifact_destination == f"{root}/cok00000000000000000000001"


@pytest.mark.parametrize("relative", ["../sibling/model.pt", "/etc/lbtrain-escape", "a/../../x"])
def test_a_file_name_that_climbs_out_is_refused(tmp_path: Path, relative: str) -> None:
    run = tmp_path / "artifacts" / "crun0000000000000000000001"
    with pytest.raises(DestinationEscapesError, match="outside it"):
        Destination(str(run)).write_bytes(relative, b"weights")
    assert files_under(tmp_path) == []


def test_a_symlink_out_of_the_destination_is_not_followed(tmp_path: Path) -> None:
    run = tmp_path / "artifacts" / "crun0000000000000000000001"
    elsewhere = tmp_path / "elsewhere"
    run.mkdir(parents=True)
    elsewhere.mkdir()
    (run / "checkpoints").symlink_to(elsewhere)
    with pytest.raises(DestinationEscapesError, match="symbolic link"):
        Destination(str(run)).write_bytes("checkpoints/last.pt", b"weights")
    assert files_under(elsewhere) == []
    assert Destination(str(run)).write_bytes("last.pt", b"weights") == str(run / "last.pt")
    assert (run / "last.pt").read_bytes() == b"weights"
