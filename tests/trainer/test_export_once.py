"""A run of several pods exports from Labelbox and prepares once; a retry reuses it.

Two "pods" are two workspaces sharing one artifact destination, each stage a real process
configured by the environment alone, as the operator's Indexed Job runs it (Kubernetes sets
``JOB_COMPLETION_INDEX``, the operator ``LBTRAIN_NUM_NODES`` and ``LBTRAIN_RUN_UID``). Pod 1 is
given a Labelbox endpoint nothing listens on and a wrong key: it can only succeed by never
calling Labelbox.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lbtrain import contract
from lbtrain_dev.testbed.s3server import S3Server, s3_server
from lbtrain_trainer import bundle as bd
from tests.trainer.conftest import TrainerRun, _closed_port
from tests.trainer.test_objectstore import isolated

pytestmark = pytest.mark.trainer
EXPORT_FIELD = "exportDataRowsInModelRun"
RUN_UID = "0b7c9a52-uid-of-the-modelrun"
BUCKET = "runs"


class Pod:
    """One pod of a two-pod run: its own workspace and termination message, the shared
    destination."""

    def __init__(
        self,
        run: TrainerRun,
        index: int,
        name: str,
        destination: str,
        aws: dict[str, str] | None = None,
    ) -> None:
        self.run, self.index, self.aws = run, index, aws
        self.root = run.tmp / name
        self.workspace = self.root / "workspace"
        self.termination = self.root / "termination-log"
        self.destination = destination
        self.stderr = ""

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **self.run.env(),
            contract.ENV_WORKSPACE: str(self.workspace),
            contract.ENV_ARTIFACTS: self.destination,
            contract.ENV_TERMINATION_MESSAGE_PATH: str(self.termination),
            contract.ENV_NUM_NODES: "2",
            contract.ENV_RUN_UID: RUN_UID,
            contract.COMPLETION_INDEX_ENV: str(self.index),
        }
        if self.index > 0:  # Labelbox is out of reach: pod 1 must never need it
            dead = f"http://127.0.0.1:{_closed_port()}"
            env[contract.ENV_LABELBOX_ENDPOINT] = dead + "/graphql"
            env[contract.ENV_LABELBOX_REST_ENDPOINT] = dead + "/api/v1"
            env[contract.ENV_LABELBOX_API_KEY] = "not-a-key"
        env |= extra
        return isolated({**env, **self.aws}) if self.aws else env

    def start(self, stage: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "lbtrain", "trainer", stage, "--log-level", "INFO"],
            env=self.env(**extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def stage(self, stage: str, **extra: str) -> int:
        proc = self.start(stage, **extra)
        _, self.stderr = proc.communicate(timeout=240)
        return proc.returncode

    def summary(self) -> dict[str, Any]:
        """The termination message: JSON within Kubernetes' limit, as the operator reads it."""
        data = self.termination.read_bytes()
        assert len(data) <= contract.TERMINATION_MESSAGE_MAX_BYTES
        result: dict[str, Any] = json.loads(data)
        return result

    def file(self, relative: str) -> bytes:
        return (self.workspace / relative).read_bytes()


def exports(run: TrainerRun) -> int:
    """Exports of ``run``'s model run the fake was asked for."""
    return sum(
        1
        for r in run.fake.requests
        if r.field == EXPORT_FIELD
        and ((r.variables or {}).get("input") or {}).get("filters", {}).get("modelRunId")
        == run.run_id
    )


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 60) -> list[str]:
    """Lines of ``proc``'s stderr up to the first holding ``needle``."""
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"never logged {needle!r}:\n{''.join(lines)}")


def destination_files(destination: Path) -> list[str]:
    return sorted(p.relative_to(destination).as_posix() for p in destination.rglob("*"))


@pytest.fixture
def two_pods(seed):
    run = seed("image_single_classification")
    shared = run.tmp / "shared-destination"
    return run, Pod(run, 0, "pod-0", str(shared)), Pod(run, 1, "pod-1", str(shared)), shared


def test_two_pods_export_once_and_end_with_the_same_prepared_data(two_pods):
    run, pod0, pod1, shared = two_pods
    before = exports(run)
    waiting = pod1.start("export")  # first: it waits for pod 0
    try:
        wait_for_line(waiting, "waiting for pod 0 to publish the prepared data")
        assert waiting.poll() is None
        assert pod0.stage("export") == 0, pod0.stderr
        assert pod0.summary()["rows"] == 40
        assert pod0.stage("prepare") == 0, pod0.stderr
        prepared0 = pod0.summary()
        assert "reused" not in prepared0
        _, rest = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
        waiting.wait()
    assert waiting.returncode == 0, rest
    exported1 = pod1.summary()
    assert exported1["status"] == "ok" and exported1["stage"] == "export"
    assert exported1["reused"] == str(shared / bd.BUNDLE)
    assert exported1["rows"] == 40  # pod 0's counts, reported by pod 1 too
    assert exported1["completion_index"] == 1

    assert pod1.stage("prepare") == 0, pod1.stderr
    prepared1 = pod1.summary()
    assert prepared1["reused"] == bd.BUNDLE
    assert (
        prepared1["splits"] == prepared0["splits"] and prepared1["classes"] == prepared0["classes"]
    )
    assert "nothing to prepare" in pod1.stderr

    assert exports(run) == before + 1  # one export from Labelbox for the two pods
    for relative in ("prepared/dataset.json", "hyperparameters.json", "splits.json"):
        assert pod1.file(relative) == pod0.file(relative)
    dataset = json.loads(pod1.file("prepared/dataset.json"))
    for example in dataset["examples"]:  # every image train reads is there, byte for byte
        assert pod1.file(example["media"]) == pod0.file(example["media"])
    assert not (pod1.workspace / "export.ndjson").exists()  # train does not read it
    assert destination_files(shared) == sorted(["prepared", bd.BUNDLE, bd.MARKER])

    # What pod 1 unpacked is all train needs (train as a one-pod run, against the fake).
    pod1.index = 0
    assert pod1.stage("train") == 0, pod1.stderr
    epochs = json.loads(pod1.file("hyperparameters.json"))["epochs"]
    assert pod1.summary()["epochs_completed"] == epochs


def test_a_retry_reuses_the_bundle_and_a_corrupt_one_is_redone(two_pods):
    run, pod0, _, shared = two_pods
    assert pod0.stage("export") == 0 and pod0.stage("prepare") == 0, pod0.stderr
    marker = json.loads((shared / bd.MARKER).read_bytes())
    after_first = exports(run)

    retry = Pod(run, 0, "retry-1", str(shared))  # a new attempt: a fresh pod 0
    assert retry.stage("export") == 0, retry.stderr
    assert "reusing the data an earlier attempt prepared" in retry.stderr
    assert retry.summary()["reused"] == str(shared / bd.BUNDLE)
    assert retry.stage("prepare") == 0 and retry.summary()["reused"] == bd.BUNDLE
    assert exports(run) == after_first  # no export at Labelbox
    assert retry.file("prepared/dataset.json") == pod0.file("prepared/dataset.json")
    assert json.loads((shared / bd.MARKER).read_bytes()) == marker  # not published again

    bundle = shared / bd.BUNDLE
    bundle.write_bytes(bundle.read_bytes()[: marker["size"] // 2])  # a torn upload
    again = Pod(run, 0, "retry-2", str(shared))
    assert again.stage("export") == 0, again.stderr
    assert "exporting from Labelbox" in again.stderr and "the marker says" in again.stderr
    assert "reused" not in again.summary()
    assert again.stage("prepare") == 0, again.stderr
    assert exports(run) == after_first + 1  # redone once
    redone = json.loads((shared / bd.MARKER).read_bytes())
    assert redone["size"] == bundle.stat().st_size == marker["size"]
    assert again.file("prepared/dataset.json") == pod0.file("prepared/dataset.json")

    other = Pod(run, 0, "other-run", str(shared))  # another ModelRun on the same destination
    assert other.stage("export", **{contract.ENV_RUN_UID: "another-uid"}) == 0, other.stderr
    assert "another run's" in other.stderr and "reused" not in other.summary()
    assert exports(run) == after_first + 2


@pytest.fixture(scope="module")
def s3(s3_binary: Path) -> Iterator[S3Server]:
    with s3_server([BUCKET], binary=s3_binary) as server:
        yield server


def test_on_an_object_store_too(seed, s3):
    run = seed("text_single_classification")
    destination = f"s3://{BUCKET}/{run.run_id}"
    pod0, pod1 = (Pod(run, i, f"s3-pod-{i}", destination, s3.env()) for i in (0, 1))
    before = exports(run)
    waiting = pod1.start("export")
    try:
        wait_for_line(waiting, "waiting for pod 0 to publish")
        assert pod0.stage("export") == 0 and pod0.stage("prepare") == 0, pod0.stderr
        _, rest = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
        waiting.wait()
    assert waiting.returncode == 0, rest
    assert pod1.summary()["reused"] == f"{destination}/{bd.BUNDLE}"
    assert pod1.stage("prepare") == 0 and pod1.summary()["reused"] == bd.BUNDLE
    for relative in ("prepared/dataset.json", "prepared/tokenizer.json"):
        assert pod1.file(relative) == pod0.file(relative)
    retry = Pod(run, 0, "s3-retry", destination, s3.env())
    assert retry.stage("export") == 0 and "reused" in retry.summary(), retry.stderr
    assert exports(run) == before + 1
    stored = s3.bucket_path(BUCKET) / run.run_id / "prepared"
    assert sorted(p.name for p in stored.iterdir()) == ["READY.json", "bundle.tar"]


def test_one_pod_publishes_nothing(seed):
    run = seed("text_single_classification")
    assert run.process("export") == 0 and run.process("prepare") == 0, run.last_stderr
    assert not (run.artifacts / "prepared").exists()
    assert "reused" not in run.summary()


def test_sigterm_ends_the_wait_at_once_with_a_parseable_summary(two_pods):
    _, _, pod1, _ = two_pods
    waiting = pod1.start("export")
    try:
        wait_for_line(waiting, "waiting for pod 0")
        started = time.monotonic()
        waiting.send_signal(signal.SIGTERM)
        waiting.communicate(timeout=10)
        took = time.monotonic() - started
    finally:
        waiting.kill()
        waiting.wait()
    assert waiting.returncode == 128 + signal.SIGTERM
    assert took < 5
    summary = pod1.summary()
    assert summary["status"] == "failed" and summary["stage"] == "export"
