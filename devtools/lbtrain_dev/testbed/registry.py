"""A container registry on loopback for the testbed: Debian's docker-registry (CNCF
Distribution), so the real node pulls lbtrain's images by name, as a cluster pulls them from
the registry `make push` pushed to.

Why it looks the way it does:
- 127.0.0.1 only, plain HTTP: nothing outside the machine can reach it, and the node's
  containerd (on the host's network) is told by a `hosts.toml` that this one host speaks HTTP
  (`nodeconfig.registry_hosts_toml`).
- A fixed port (5117) when it is free, else any free one. skopeo remembers per host:port which
  blobs a registry holds, so pushing to the same address again sends nothing it already has;
  a new port each session would send the trainer's gigabytes each time.
- Its storage is a cache (`${LBTRAIN_TESTBED_CACHE:-~/.cache/lbtrain-testbed}/registry`), kept
  across sessions, so that a warm push is instant. Only the configuration and the log are per
  run (a temporary folder).

`registry_config` is pure and unit-tested; `Registry` starts and stops the process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from lbtrain_dev.testbed.controlplane import StartError, free_port, term_when_parent_dies

PREFERRED_PORT = 5117
# Loopback only: never through a proxy the environment may name.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
BINARY = "docker-registry"  # Debian's package of the same name
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


def default_storage() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("LBTRAIN_TESTBED_CACHE") or cache / "lbtrain-testbed") / "registry"


def registry_config(storage: Path, port: int) -> dict[str, Any]:
    """Distribution's config.yml: loopback only, no auth, no TLS, filesystem storage."""
    return {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            # The storage is a cache shared by sessions: a session must not purge another's
            # upload in flight.
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        # The secret only signs upload state between requests; one value for every session
        # (nothing to hide on loopback) keeps Distribution from warning about a random one.
        "http": {"addr": f"127.0.0.1:{port}", "secret": "lbtrain-testbed", "draintimeout": "2s"},
    }


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port`. SO_REUSEADDR, as the registry's own listener sets
    it: connections of a registry just stopped (TIME_WAIT) do not make its port look taken."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int = PREFERRED_PORT) -> int:
    return preferred if port_is_free(preferred) else free_port()


class Registry:
    """One docker-registry process: `with Registry() as reg: reg.host` (e.g. 127.0.0.1:5117)."""

    def __init__(self, storage: Path | None = None, port: int | None = None) -> None:
        self.storage = storage or default_storage()
        self.port = port
        self._run_dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        if self.port is None:
            raise RuntimeError("the registry is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def log(self) -> Path | None:
        return Path(self._run_dir.name) / "registry.log" if self._run_dir else None

    def start(self, *, timeout: float = 30.0, die_with_parent: bool = True) -> Registry:
        self.storage.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = pick_port()
        self._run_dir = tempfile.TemporaryDirectory(prefix="lbtrain-registry-")
        config = Path(self._run_dir.name) / "config.yml"
        config.write_text(yaml.safe_dump(registry_config(self.storage, self.port)))
        log = self.log
        assert log is not None
        try:
            with log.open("wb") as out:
                self._proc = subprocess.Popen(
                    [BINARY, "serve", str(config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=term_when_parent_dies if die_with_parent else None,
                )
        except FileNotFoundError:
            self._cleanup()
            raise StartError(
                "registry", f"{BINARY} is not on PATH (Debian: apt-get install {BINARY})", None
            ) from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                error = StartError("registry", f"exited with {self._proc.returncode}", log)
                self.stop()
                raise error
            if self._answers():
                return self
            time.sleep(0.1)
        error = StartError("registry", f"{self.url}/v2/ did not answer in {timeout}s", log)
        self.stop()
        raise error

    def stop(self, grace: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._run_dir is not None:
            self._run_dir.cleanup()
            self._run_dir = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _answers(self) -> bool:
        try:
            with _OPENER.open(f"{self.url}/v2/", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def manifest(self, repository: str, reference: str) -> tuple[str, dict[str, Any]]:
        """The manifest of `repository:reference` as the registry serves it, and its digest
        (the Docker-Content-Digest a pull by that tag resolves to)."""
        request = urllib.request.Request(
            f"{self.url}/v2/{repository}/manifests/{reference}",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        with _OPENER.open(request, timeout=10) as resp:
            digest = str(resp.headers["Docker-Content-Digest"])
            return digest, json.loads(resp.read())
