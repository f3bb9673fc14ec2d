"""A real S3-compatible server for tests and local runs: versitygw over a temporary folder.

The trainer writes weights and checkpoints to ``s3://`` destinations through s3fs; testing that
against a mock would test the mock. versitygw (built by testbed/build-s3.sh, cached like the
Kubernetes binaries) is an S3 gateway whose ``posix`` backend keeps each bucket as a folder of
its root, so a test can create a bucket with ``mkdir`` and look at what landed with ``Path``.

    with s3_server(buckets=["runs"]) as s3:
        env = {**os.environ, **s3.env()}   # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...
        ...  # the trainer with LBTRAIN_ARTIFACTS=s3://runs/mr1
        assert (s3.bucket_path("runs") / "mr1/model/weights.pt").exists()

It listens on 127.0.0.1 by default; pods on the testbed's real node reach it when it listens
on the bridge address (``host=nodeconfig.node_ip()``). Each server gets a fresh access key and
secret, so a test can also show what a wrong one does.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from lbtrain_dev.source import run_build_script

REGION = "us-east-1"


def ensure_s3_binary(*, quiet: bool = False) -> Path:
    """The versitygw binary; builds it on first use (a cold build takes 4 to 6 min on 2 cores).

    ``LBTRAIN_TESTBED_S3_BIN`` names a ready binary and skips the build.
    """
    override = os.environ.get("LBTRAIN_TESTBED_S3_BIN")
    if override:
        if not Path(override).is_file():
            raise FileNotFoundError(f"LBTRAIN_TESTBED_S3_BIN={override} is not a file")
        return Path(override)
    return Path(run_build_script("testbed/build-s3.sh", quiet=quiet).strip().splitlines()[-1])


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class S3Server:
    """One versitygw process serving the buckets under ``root`` (see the module docstring)."""

    def __init__(self, binary: Path, root: Path, *, host: str = "127.0.0.1") -> None:
        self.binary, self.root, self.host = binary, root, host
        self.port = 0
        self.access_key = "lbtrain-" + secrets.token_hex(6)
        self.secret_key = secrets.token_urlsafe(24)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root.parent / f"{self.root.name}.log"

    def env(self) -> dict[str, str]:
        """The standard variables that point s3fs (botocore) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def create_bucket(self, name: str) -> Path:
        """A bucket is a folder of the posix backend's root."""
        path = self.bucket_path(name)
        path.mkdir()
        return path

    def bucket_path(self, name: str) -> Path:
        return self.root / name

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        self._log = self.log_path.open("ab")
        # The keys travel in the environment, never on a command line that `ps` shows.
        env = {
            **os.environ,
            "ROOT_ACCESS_KEY_ID": self.access_key,
            "ROOT_SECRET_ACCESS_KEY": self.secret_key,
        }
        self._process = subprocess.Popen(
            [
                str(self.binary),
                "--port",
                f"{self.host}:{self.port}",
                "--region",
                REGION,
                "--quiet",
                "posix",
                str(self.root),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if not self.running():
                self.stop()
                raise RuntimeError(
                    f"versitygw exited at start; its log: {self.log_path.read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"versitygw did not answer on {self.endpoint} in {timeout}s")
            time.sleep(0.05)

    def _answers(self) -> bool:
        """Any HTTP answer counts (an unsigned request is refused with 403)."""
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def stop(self, grace: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> S3Server:
        if not self.running():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def s3_server(
    buckets: Iterable[str] = (), *, host: str = "127.0.0.1", binary: Path | None = None
) -> Iterator[S3Server]:
    """A started server over a fresh temporary root holding ``buckets``; all of it is removed
    when the block ends."""
    binary = binary or ensure_s3_binary()
    with (
        tempfile.TemporaryDirectory(prefix="lbtrain-s3-") as tmp,
        S3Server(binary, Path(tmp) / "root", host=host) as server,
    ):
        for name in buckets:
            server.create_bucket(name)
        yield server
