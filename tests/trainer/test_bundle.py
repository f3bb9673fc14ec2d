"""The decisions and the bundle of "export once per run" (:mod:`lbtrain_trainer.shared_prepare`,
:mod:`lbtrain_trainer.bundle`), without Labelbox: who publishes, what the key covers, which
markers and bundles are refused, what a bundle holds, and that a refused bundle or a failed
read leaves the workspace untouched. The stages themselves: ``test_export_once.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from lbtrain import contract
from lbtrain_trainer import bundle as bd
from lbtrain_trainer import shared_prepare as sp
from lbtrain_trainer.artifacts import Destination
from lbtrain_trainer.settings import Settings, resolve
from lbtrain_trainer.workspace import Workspace


def test_role_of():
    assert sp.role_of(1, None) is None
    assert sp.role_of(1, 0) is None  # one pod: today's stages
    assert sp.role_of(3, None) is None  # not an Indexed Job
    assert sp.role_of(3, 0) == sp.Role(0, 3) and sp.Role(0, 3).leader
    assert not sp.Role(2, 3).leader


def test_settings_read_the_contract():
    env = {
        contract.ENV_MODEL_RUN_ID: "mr",
        contract.ENV_MODEL_TYPE: "ner",
        contract.ENV_NUM_NODES: "4",
        contract.COMPLETION_INDEX_ENV: "2",
        contract.ENV_RUN_UID: "u-1",
    }
    s = resolve({}, env)
    assert (s.num_nodes, s.completion_index, s.run_uid) == (4, 2, "u-1")
    plain = resolve({}, {contract.ENV_MODEL_RUN_ID: "mr", contract.ENV_MODEL_TYPE: "ner"})
    assert (plain.num_nodes, plain.completion_index, plain.run_uid) == (1, None, "")
    with pytest.raises(Exception, match="whole number"):
        resolve({}, {**env, contract.COMPLETION_INDEX_ENV: "x"})


def test_the_key_changes_with_every_input():
    base = bd.bundle_key("uid", "mr", "ner", {"epochs": 2})
    assert base == bd.bundle_key("uid", "mr", "ner", {"epochs": 2})
    others = {
        bd.bundle_key("uid-2", "mr", "ner", {"epochs": 2}),
        bd.bundle_key("uid", "mr-2", "ner", {"epochs": 2}),
        bd.bundle_key("uid", "mr", "bounding_box", {"epochs": 2}),
        bd.bundle_key("uid", "mr", "ner", {"epochs": 3}),
    }
    assert base not in others and len(others) == 4


def test_marker_problems():
    good = {"format": bd.FORMAT, "key": "k", "size": 10, "sha256": "ab"}
    assert bd.marker_problem(good, "k") is None
    assert bd.marker_problem(None, "k") == bd.Problem(bd.NO_MARKER, bd.MSG_NO_MARKER)
    assert bd.marker_problem(bd.parse_marker(b"{torn"), "k").reason == bd.UNREADABLE  # type: ignore[union-attr]
    assert bd.marker_problem({**good, "format": 99}, "k").reason == bd.UNREADABLE  # type: ignore[union-attr]
    assert bd.marker_problem({**good, "size": "10"}, "k").reason == bd.UNREADABLE  # type: ignore[union-attr]
    assert bd.marker_problem(good, "other").reason == bd.OTHER_RUN  # type: ignore[union-attr]
    assert bd.bundle_problem(good, 10, "ab") is None
    assert bd.bundle_problem(good, 9, "ab").reason == bd.SIZE_MISMATCH  # type: ignore[union-attr]
    assert bd.bundle_problem(good, 10, "cd").reason == bd.SHA_MISMATCH  # type: ignore[union-attr]


def test_the_bundle_holds_what_train_reads_and_not_the_export_or_the_index(tmp_path: Path):
    ws = Workspace(tmp_path)
    for relative in (
        "export.ndjson",
        "hyperparameters.json",
        "splits.json",
        "features.json",
        "export-summary.json",
        "prepared/dataset.json",
        "prepared/dataset.json.partial",
        "prepared/tokenizer.json",
        "media/ab/row-1.png",
        "media/index.sqlite",
        "media/index.sqlite-wal",
        "scratch/x",
    ):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x")
    assert [name for _, name in bd.bundle_members(ws)] == [
        "export-summary.json",
        "features.json",
        "hyperparameters.json",
        "media/ab/row-1.png",
        "prepared/dataset.json",
        "prepared/tokenizer.json",
        "splits.json",
    ]


def _workspace_with(root: Path, files: dict[str, bytes]) -> Workspace:
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return Workspace(root)


def _leader_and_follower(tmp_path: Path) -> tuple[Settings, Settings]:
    leader = Settings(
        model_run_id="mr",
        model_type="ner",
        workspace=tmp_path / "pod-0",
        artifacts=str(tmp_path / "shared"),
        num_nodes=2,
        completion_index=0,
        run_uid="u",
    )
    return leader, dataclasses.replace(leader, workspace=tmp_path / "pod-1", completion_index=1)


def test_a_tampered_bundle_of_the_same_size_is_refused_and_the_workspace_untouched(
    tmp_path: Path,
):
    settings, _ = _leader_and_follower(tmp_path)
    files = {
        "hyperparameters.json": b"{}",
        "prepared/dataset.json": b'{"examples": []}',
        "media/a/row-1.txt": b"x" * 5000,
    }
    published = _workspace_with(settings.workspace, files)
    dest = Destination(settings.artifact_destination)
    marker = bd.publish(published, dest, sp.settings_key(settings), settings.model_run_id)
    follower = dataclasses.replace(settings, workspace=tmp_path / "pod-1", completion_index=1)
    good = Workspace(follower.workspace)
    assert bd.try_fetch(good, dest, sp.settings_key(follower)) == (marker, None)
    for relative, data in files.items():
        assert (good.root / relative).read_bytes() == data
    assert not (good.scratch_dir / "bundle").exists()  # the staging folder is gone

    bundle = tmp_path / "shared" / bd.BUNDLE
    torn = bytearray(bundle.read_bytes())
    torn[len(torn) // 3] ^= 0xFF  # inside the text file: the tar still unpacks
    bundle.write_bytes(bytes(torn))
    other = Workspace(tmp_path / "pod-2")
    got, problem = bd.try_fetch(other, dest, sp.settings_key(follower))
    assert got is None and problem is not None and problem.reason == bd.SHA_MISMATCH
    assert not (other.root / "media").exists() and not other.bundle_marker_file.exists()

    (tmp_path / "shared" / bd.MARKER).unlink()
    assert bd.try_fetch(other, dest, sp.settings_key(follower)) == (
        None,
        bd.Problem(bd.NO_MARKER, bd.MSG_NO_MARKER),
    )


def test_a_failed_read_while_waiting_is_tried_again(tmp_path: Path, caplog):
    leader, _ = _leader_and_follower(tmp_path)
    published = _workspace_with(leader.workspace, {"prepared/dataset.json": b"{}"})
    follower = dataclasses.replace(leader, workspace=tmp_path / "pod-1", completion_index=1)
    dest = Destination(leader.artifact_destination)
    (tmp_path / "shared" / bd.MARKER).mkdir(parents=True)  # reading it fails: a directory
    naps: list[float] = []

    def sleep(seconds: float) -> None:  # pod 0 publishes during the first nap
        naps.append(seconds)
        if len(naps) == 1:
            (tmp_path / "shared" / bd.MARKER).rmdir()
            bd.publish(published, dest, sp.settings_key(leader), leader.model_run_id)

    with caplog.at_level("INFO", logger=sp.__name__):
        marker = sp.wait_for_bundle(
            follower, Workspace(follower.workspace), dest, sp.Role(1, 2), sleep=sleep
        )
    assert marker["model_run_id"] == "mr" and naps == [sp.POLL_S]
    assert "reading it failed" in caplog.text and "waiting for pod 0" in caplog.text
    assert (tmp_path / "pod-1" / "prepared/dataset.json").read_bytes() == b"{}"


@pytest.mark.parametrize("evil", ["../escaped.txt", "/tmp/absolute.txt", "link"])
def test_a_bundle_member_outside_the_workspace_or_not_a_file_is_refused(tmp_path: Path, evil):
    """A bundle whose marker matches (someone with write access to the destination wrote both)
    but that names a path outside the workspace, or holds a link, unpacks nothing."""
    leader, follower = _leader_and_follower(tmp_path)
    published = _workspace_with(leader.workspace, {"prepared/dataset.json": b"{}"})
    dest = Destination(leader.artifact_destination)
    marker = bd.publish(published, dest, sp.settings_key(leader), leader.model_run_id)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("prepared/dataset.json", b"{}"), (evil, b"owned")]:
            info = tarfile.TarInfo(name)
            if name == "link":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if name != "link" else None)
    data = raw.getvalue()
    (tmp_path / "shared" / bd.BUNDLE).write_bytes(data)
    marker |= {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (tmp_path / "shared" / bd.MARKER).write_text(json.dumps(marker))

    ws = Workspace(follower.workspace)
    with pytest.raises(tarfile.TarError, match=r"outside the workspace|not a regular file"):
        bd.try_fetch(ws, dest, sp.settings_key(follower))
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/absolute.txt").exists()
    assert not (ws.root / "prepared").exists() and not ws.bundle_marker_file.exists()


def test_a_bug_while_waiting_ends_the_wait_instead_of_hiding_it(tmp_path: Path, monkeypatch):
    """Pod 0 trains and waits for this pod in the rendezvous: a wait that retried an error no
    retry can fix (here a TypeError, as an unpack call that the image's Python rejects) would
    hang the run until the rendezvous timed out."""
    leader, follower = _leader_and_follower(tmp_path)
    published = _workspace_with(leader.workspace, {"prepared/dataset.json": b"{}"})
    dest = Destination(leader.artifact_destination)
    bd.publish(published, dest, sp.settings_key(leader), leader.model_run_id)

    def broken(tar: tarfile.TarFile, staging: Path) -> None:
        raise TypeError("extractall() got an unexpected keyword argument 'filter'")

    monkeypatch.setattr(bd, "_unpack", broken)
    naps: list[float] = []
    with pytest.raises(TypeError, match="filter"):
        sp.wait_for_bundle(
            follower, Workspace(follower.workspace), dest, sp.Role(1, 2), sleep=naps.append
        )
    assert naps == []  # no retry
