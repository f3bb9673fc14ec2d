"""Several training processes in one container, launched exactly as the operator launches them.

The train stage runs under the real torchrun with the operator's own launcher variables
(`lbtrain_operator.scale`: `PET_*`, `--no-python` through the environment, the template's
command as an executable): if torchrun stopped reading a variable the way the operator writes
it, these tests fail here rather than in a user's pod.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lbtrain import contract
from lbtrain_operator import scale
from lbtrain_trainer.cpus import cpu_quota, threads_per_process

from .conftest import TrainerRun

BIN = Path(sys.executable).parent


def test_each_process_gets_its_part_of_the_container_s_cpus() -> None:
    assert threads_per_process(8, 1) == 8
    assert threads_per_process(8, 2) == 4
    assert threads_per_process(6, 4) == 1  # never more threads than the quota, in all
    assert threads_per_process(1, 4) == 1  # at least one


@pytest.mark.trainer
def test_setup_sizes_torch_s_pool_by_the_local_world(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from lbtrain_trainer.hyperparams import Hyperparameters
    from lbtrain_trainer.runtime import setup

    before = torch.get_num_threads()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    try:
        setup(Hyperparameters())  # RANK/WORLD_SIZE unset: no process group
        assert torch.get_num_threads() == max(1, cpu_quota() // 2)
    finally:
        torch.set_num_threads(before)


def _launch(run: TrainerRun, artifacts: Path, procs: int) -> subprocess.Popen[str]:
    """`torchrun lbtrain trainer train` with the train container's environment as the operator
    builds it for a pod of `procs` processes."""
    shape = scale.Scale(nodes=1, procs=procs)
    launcher = {e["name"]: e["value"] for e in scale.launcher_env(shape, "mr-1-train")}
    command = scale.train_command([str(BIN / "lbtrain"), "trainer"], shape)
    env = {**run.env(), **launcher, contract.ENV_ARTIFACTS: str(artifacts)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # torchrun, as on the image's PATH
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the test can kill every rank
    )


def _kill_tree(root: int) -> None:
    """SIGKILL torchrun and every process under it, as the kubelet kills a container's cgroup.
    (torchrun starts each worker in a session of its own: killing its process group would
    leave the ranks running.)"""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grown = {root}, True
    while grown:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grown = bool(more)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _finish(proc: subprocess.Popen[str], timeout: float = 300) -> None:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]


def _checkpoint_epoch(artifacts: Path) -> int | None:
    import torch

    path = artifacts / "checkpoint" / "last.pt"
    if not path.exists():
        return None
    data: dict[str, Any] = torch.load(io.BytesIO(path.read_bytes()), weights_only=False)
    return int(data["epoch"])


def _weights(artifacts: Path) -> dict[str, Any]:
    import torch

    weights: dict[str, Any] = torch.load(artifacts / "model" / "weights.pt", weights_only=False)
    return weights


@pytest.mark.slow
@pytest.mark.trainer
def test_two_processes_resume_every_rank_from_one_checkpoint(seed: Any) -> None:
    """A pod killed mid-training (SIGKILL, after a checkpoint) and started again resumes both
    ranks from the checkpoint's whole state: the final weights are exactly those of a run that
    was never interrupted. A rank resuming anything else (its own fresh start, another epoch,
    the parameters without the optimizer's moments or the scheduler's step) changes them, or
    hangs the collectives."""
    import torch

    epochs = 6
    # Enough rows that an epoch lasts long enough to be interrupted after its checkpoint.
    run = seed("image_single_classification", n_rows=240, epochs=epochs, batch_size=4)
    assert run.main("export") == 0 and run.main("prepare") == 0
    whole, resumed = run.tmp / "whole", run.tmp / "resumed"

    _finish(_launch(run, whole, procs=2))
    assert run.summary()["throughput"]["world_size"] == 2
    assert run.summary()["resumed_from_epoch"] == 0
    assert len(run.fake.imports(run.run_id)) == 1  # rank 0 alone uploaded

    interrupted = _launch(run, resumed, procs=2)
    deadline = time.monotonic() + 240
    # The checkpoint appears by a rename once epoch 1 is saved; the kill follows within
    # milliseconds, long before the next epoch ends (hundreds of steps away).
    while not (resumed / "checkpoint" / "last.pt").exists():
        assert interrupted.poll() is None, interrupted.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.002)
    _kill_tree(interrupted.pid)
    interrupted.communicate()
    killed_after = _checkpoint_epoch(resumed)
    assert killed_after is not None and 1 <= killed_after < epochs, killed_after

    # The same model's predictions are in Labelbox already (the uninterrupted run's import has
    # the same name): the resumed run finds them instead of uploading twice.
    _finish(_launch(run, resumed, procs=2))
    summary = run.summary()
    assert summary["resumed_from_epoch"] == killed_after
    assert summary["epochs_completed"] == epochs
    assert len(run.fake.imports(run.run_id)) == 1  # predictions uploaded once

    expected, got = _weights(whole), _weights(resumed)
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"resumed weights differ from the uninterrupted run's: {different}"
