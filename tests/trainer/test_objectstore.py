"""``s3://`` artifact destinations against a real S3 server (versitygw, through s3fs).

The stages run as their own processes, configured by the environment alone, with the standard
AWS variables a template's env/envFrom would set: weights and checkpoints land in the bucket, a
new pod resumes from the bucket's checkpoint, and every way a destination can be unusable ends
the stage before any work with its exit code (78: fix the configuration, never retried; 1: an
endpoint that does not answer, retried) and a message that holds no credential. Writes stream:
a large checkpoint is never held twice in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbtrain import contract
from lbtrain_dev.testbed.s3server import S3Server, s3_server
from lbtrain_trainer import artifacts
from tests.trainer.conftest import TrainerRun, _closed_port

pytestmark = pytest.mark.trainer
BUCKET = "runs"
MIB = 2**20


@pytest.fixture(scope="module")
def s3(s3_binary: Path) -> Iterator[S3Server]:
    with s3_server([BUCKET], binary=s3_binary) as server:
        yield server


def isolated(env: dict[str, str]) -> dict[str, str]:
    """No credentials from this machine's files or a cloud metadata service: only ``env``'s."""
    return {
        **{k: v for k, v in env.items() if not k.startswith("AWS_")},
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
        "AWS_CONFIG_FILE": "/nonexistent/config",
        "AWS_EC2_METADATA_DISABLED": "true",
        **{k: v for k, v in env.items() if k.startswith("AWS_")},
    }


def stage(run: TrainerRun, name: str, destination: str, aws: dict[str, str], **hp) -> int:
    """``lbtrain trainer <name>`` as a container runs it, writing to ``destination``."""
    env = isolated({**run.env(**hp), contract.ENV_ARTIFACTS: destination, **aws})
    done = subprocess.run(
        [sys.executable, "-m", "lbtrain", "trainer", name, "--log-level", "INFO"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    run.last_stderr = done.stderr
    return done.returncode


def objects(s3: S3Server, prefix: str) -> list[str]:
    root = s3.bucket_path(BUCKET) / prefix
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_weights_and_checkpoint_land_in_the_bucket_and_a_new_pod_resumes_from_it(seed, s3):
    run = seed("image_single_classification", epochs=1)
    destination = f"s3://{BUCKET}/{run.run_id}"
    for name in ("export", "prepare", "train"):
        assert stage(run, name, destination, s3.env()) == 0, run.last_stderr[-3000:]
    trained = run.summary()
    assert trained["artifacts"]["weights"] == f"{destination}/model/weights.pt"
    assert trained["artifacts"]["checkpoint"] == f"{destination}/checkpoint/last.pt"
    assert trained["epochs_completed"] == 1 and trained["resumed_from_epoch"] == 0
    landed = objects(s3, run.run_id)
    assert {"model/weights.pt", "model/model.json", "checkpoint/last.pt"} <= set(landed)
    assert not [o for o in landed if artifacts.PROBE_PREFIX in o]  # every probe was deleted
    assert not run.artifacts.exists()  # nothing went to a local folder instead
    card = json.loads((s3.bucket_path(BUCKET) / run.run_id / "model/model.json").read_text())
    assert card["model_type"] == "image_single_classification"

    # A new pod: a fresh workspace (an emptyDir), the same bucket, one more epoch asked for.
    import shutil

    shutil.rmtree(run.workspace)
    assert stage(run, "run", destination, s3.env(), epochs=2) == 0, run.last_stderr[-3000:]
    resumed = run.summary()
    assert resumed["resumed_from_epoch"] == 1 and resumed["epochs_completed"] == 2


def refused(run: TrainerRun, name: str, code: int, *secrets: str) -> str:
    """The failed stage's error, checked to name no secret anywhere a person could read it."""
    summary = run.summary()
    assert summary["status"] == "failed" and summary["exit_code"] == code, summary
    for secret in secrets:
        assert secret not in run.termination.read_text()
        assert secret not in run.last_stderr
    assert not (run.workspace / "export.ndjson").exists()  # nothing was exported first
    error: str = summary["error"]
    return error


def test_a_missing_bucket_fails_export_at_once_with_78(seed, s3):
    run = seed("image_single_classification")
    code = stage(run, "export", f"s3://no-such-bucket/{run.run_id}", s3.env())
    assert code == contract.EXIT_DESTINATION_UNUSABLE, run.last_stderr[-2000:]
    error = refused(run, "export", code, s3.secret_key)
    assert error.startswith(f"artifact destination s3://no-such-bucket/{run.run_id} is unusable")
    assert "bucket does not exist" in error


@pytest.mark.parametrize(
    ("who", "why"),
    [
        ("wrong-secret", "the credentials were refused"),
        # versitygw's own error code for an unknown key (XAdminUserNotFound), with HTTP 404
        ("unknown-key", "the store refused the request (HTTP 404)"),
    ],
)
def test_refused_credentials_fail_export_with_78_and_never_show_the_secret(seed, s3, who, why):
    run = seed("image_single_classification")
    aws = s3.env()
    if who == "wrong-secret":
        aws["AWS_SECRET_ACCESS_KEY"] = "wrong-" + s3.secret_key[::-1]
    else:
        aws["AWS_ACCESS_KEY_ID"] = "AKIAUNKNOWNKEY123456"
    code = stage(run, "export", f"s3://{BUCKET}/{run.run_id}", aws)
    assert code == contract.EXIT_DESTINATION_UNUSABLE, run.last_stderr[-2000:]
    error = refused(run, "export", code, aws["AWS_SECRET_ACCESS_KEY"], s3.secret_key)
    assert why in error
    assert objects(s3, run.run_id) == []


def test_no_credentials_at_all_fail_with_78(seed, s3):
    run = seed("image_single_classification")
    aws = {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    code = stage(run, "export", f"s3://{BUCKET}/{run.run_id}", aws)
    assert code == contract.EXIT_DESTINATION_UNUSABLE, run.last_stderr[-2000:]
    assert "no usable credentials" in refused(run, "export", code)


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("abfs://container/runs/{id}", "no fsspec backend for abfs:// is installed"),
        ("nosuchscheme://bucket/runs/{id}", "nosuchscheme"),
    ],
)
def test_a_scheme_without_a_backend_fails_with_78(seed, s3, uri, needle):
    run = seed("image_single_classification")
    code = stage(run, "export", uri.format(id=run.run_id), s3.env())
    assert code == contract.EXIT_DESTINATION_UNUSABLE, run.last_stderr[-2000:]
    assert needle in refused(run, "export", code)


def test_an_endpoint_that_does_not_answer_is_retried_exit_1(seed, s3):
    run = seed("image_single_classification")
    aws = {**s3.env(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}"}
    code = stage(run, "export", f"s3://{BUCKET}/{run.run_id}", aws)
    assert code == 1, run.last_stderr[-2000:]
    error = refused(run, "export", code, s3.secret_key)
    assert "did not answer a probe write (retried)" in error


def test_train_probes_before_it_builds_the_model(seed, s3):
    run = seed("image_single_classification", epochs=1)
    good = f"s3://{BUCKET}/{run.run_id}"
    assert stage(run, "export", good, s3.env()) == 0, run.last_stderr[-2000:]
    assert stage(run, "prepare", good, s3.env()) == 0, run.last_stderr[-2000:]
    code = stage(run, "train", f"s3://gone/{run.run_id}", s3.env())
    assert code == contract.EXIT_DESTINATION_UNUSABLE, run.last_stderr[-2000:]
    summary = run.summary()
    assert summary["stage"] == "train" and "bucket does not exist" in summary["error"]
    assert "epoch" not in run.last_stderr  # no training step ran
    assert not run.fake.imports(run.run_id)


@pytest.fixture
def aws_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in isolated(s3.env()).items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)


def traced_peak(write) -> int:
    """Bytes Python allocated at most while ``write()`` ran (the payload was made before)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        write()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_write_holds_a_block_or_two_never_a_second_copy(s3, aws_env):
    payload = os.urandom(128 * MIB)
    dest = artifacts.Destination(f"s3://{BUCKET}/memory-bytes")
    peak = traced_peak(lambda: dest.write_bytes("big.bin", payload))
    stored = (s3.bucket_path(BUCKET) / "memory-bytes/big.bin").read_bytes()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(payload).digest()
    # Handing fsspec the whole bytes object made it buffer a second 128 MiB copy; now what it
    # holds is a few blocks (its buffer, the part being sent), whatever the payload's size.
    assert peak < 6 * artifacts.BLOCK_SIZE < len(payload) // 2, f"peak {peak / MIB:.0f} MiB"


def test_a_checkpoint_streams_into_the_bucket_without_a_second_copy(s3, aws_env):
    import torch

    from lbtrain_trainer.checkpoint import Checkpointer, State

    tensors = {f"layer{i}": torch.full((4 * MIB,), float(i)) for i in range(8)}  # 8 x 16 MiB
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    checkpointer = Checkpointer(artifacts.Destination(f"s3://{BUCKET}/memory-ckpt"), "f" * 16)
    peak = traced_peak(lambda: checkpointer.save(State(epoch=3, model=tensors)))
    # Serializing into a BytesIO and writing its value held the checkpoint two to three times;
    # streamed, it holds one tensor's bytes (torch's) and a few blocks.
    assert peak < 6 * artifacts.BLOCK_SIZE < size // 2, f"peak {peak / MIB:.0f} MiB"
    loaded = checkpointer.load()
    assert loaded is not None and loaded.epoch == 3
    assert torch.equal(loaded.model["layer7"], tensors["layer7"])
