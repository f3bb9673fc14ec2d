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
- That cache is bounded: each session pushes under a tag of its own, and every trainer rebuild
  brings gigabytes of new layers. Before serving, every repository keeps only its newest
  `keep_tags` tags and Distribution's own `garbage-collect --delete-untagged` drops the blobs
  nothing tagged uses (`stale_tags` decides, `prune` acts). The newest tag stays, so the next
  push of an unchanged image still sends nothing.

`registry_config` is pure and unit-tested; `Registry` starts and stops the process.
"""

from __future__ import annotations

import json
import os
import shutil
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


def stale_tags(tags: dict[str, float], keep: int) -> list[str]:
    """The tags of one repository to untag: all but the `keep` newest (by the time each tag
    was last pushed), oldest first."""
    newest_first = sorted(tags, key=lambda tag: (tags[tag], tag), reverse=True)
    return sorted(newest_first[keep:], key=lambda tag: (tags[tag], tag))


def tag_folders(storage: Path) -> dict[Path, dict[str, float]]:
    """Every repository's `_manifests/tags` folder in Distribution's filesystem layout, with each
    tag's last push time (the mtime of its `current/link`)."""
    found: dict[Path, dict[str, float]] = {}
    for tags_dir in storage.glob("docker/registry/v2/repositories/**/_manifests/tags"):
        found[tags_dir] = {
            tag.name: (tag / "current" / "link").stat().st_mtime
            for tag in tags_dir.iterdir()
            if (tag / "current" / "link").is_file()
        }
    return found


def prune(storage: Path, config: Path, keep: int) -> list[str]:
    """Untag all but the newest `keep` tags of every repository, then let the registry's own
    garbage collector delete what no tag uses. Returns the `repository:tag`s removed."""
    removed: list[str] = []
    for tags_dir, tags in tag_folders(storage).items():
        repository = tags_dir.parent.parent.relative_to(
            storage / "docker" / "registry" / "v2" / "repositories"
        )
        for tag in stale_tags(tags, keep):
            shutil.rmtree(tags_dir / tag)
            removed.append(f"{repository}:{tag}")
    if removed:
        subprocess.run(
            [BINARY, "garbage-collect", "--delete-untagged", str(config)],
            check=True,
            capture_output=True,
            timeout=600,
        )
    return removed


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

    def __init__(
        self, storage: Path | None = None, port: int | None = None, keep_tags: int | None = 2
    ) -> None:
        self.storage = storage or default_storage()
        self.port = port
        self.keep_tags = keep_tags  # None: never prune
        self._run_dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.pruned: list[str] = []

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
        if self.keep_tags is not None:
            try:
                self.pruned = prune(self.storage, config, self.keep_tags)
            except FileNotFoundError:
                self._cleanup()
                raise StartError(
                    "registry", f"{BINARY} is not on PATH (Debian: apt-get install {BINARY})", None
                ) from None
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
