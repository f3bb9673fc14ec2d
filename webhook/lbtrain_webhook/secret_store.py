"""Where the shared secrets come from: files (a mounted Kubernetes Secret) and the environment.

Several secrets are accepted at once, so a rotation is: add the new secret (one per line, or a
second file), change it in Labelbox, remove the old one. Files are re-read when they change
(polled about once a second), with no restart. A file that becomes unreadable keeps its last
good secrets and logs an error, so a half-finished volume update never locks Labelbox out.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lbtrain.logs import get_logger
from lbtrain_webhook.settings import Settings, split_secrets

log = get_logger("lbtrain.webhook.secrets")

Stamp = tuple[int, int, int, int]


class SecretError(Exception):
    """A secret file cannot be used at startup."""


@dataclass
class _Source:
    path: Path
    stamp: Stamp | None = None
    secrets: tuple[bytes, ...] = ()


def file_stamp(path: Path) -> Stamp:
    """What changes when the file does. `stat` follows the `..data` symlink of a Secret volume,
    so the kubelet's atomic swap shows as a new inode even when size and times match."""
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_secret_file(path: Path) -> tuple[bytes, ...]:
    return tuple(s.encode() for s in split_secrets(path.read_text(encoding="utf-8")))


class SecretStore:
    """The secrets accepted right now; `reload_if_changed` picks up edited files."""

    def __init__(self, files: Sequence[Path] = (), inline: Sequence[str] = ()) -> None:
        self._sources = [_Source(Path(p)) for p in files]
        self._inline = tuple(s.encode() for s in inline if s)
        self._current: tuple[bytes, ...] = self._inline

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretStore:
        store = cls(settings.secret_files, settings.inline_secrets)
        store.load()
        return store

    def __repr__(self) -> str:
        return f"<SecretStore {self.describe()}>"

    def describe(self) -> str:
        """How many secrets from where; never the secrets themselves."""
        return (
            f"{len(self._current)} secret(s) from {len(self._sources)} file(s)"
            f"{' and the environment' if self._inline else ''}"
        )

    def current(self) -> tuple[bytes, ...]:
        return self._current

    def load(self) -> None:
        """Read every file now; raise SecretError if one cannot be read."""
        for source in self._sources:
            try:
                source.stamp = file_stamp(source.path)
                source.secrets = read_secret_file(source.path)
            except (OSError, UnicodeDecodeError) as exc:
                raise SecretError(f"cannot read secret file {source.path}: {_why(exc)}") from exc
            if not source.secrets:
                log.warning("secret file holds no secret", extra={"path": str(source.path)})
        self._rebuild()

    def reload_if_changed(self) -> bool:
        """Re-read the files whose inode, size or times changed; True when the secrets changed."""
        before = self._current
        for source in self._sources:
            try:
                stamp = file_stamp(source.path)
                if stamp == source.stamp:
                    continue
                source.secrets, source.stamp = read_secret_file(source.path), stamp
            except (OSError, UnicodeDecodeError) as exc:
                if source.stamp is not None:
                    log.error(
                        "cannot re-read secret file; keeping its last secrets",
                        extra={"path": str(source.path), "error": _why(exc)},
                    )
                source.stamp = None
        self._rebuild()
        if self._current != before:
            log.info("webhook secrets reloaded", extra={"secrets": self.describe()})
            return True
        return False

    async def poll(self, interval: float) -> None:
        """Reload changed files every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.reload_if_changed()
            except Exception as exc:  # never let the poller die quietly
                log.error("secret reload failed", extra={"error": type(exc).__name__})

    def _rebuild(self) -> None:
        merged: dict[bytes, None] = dict.fromkeys(self._inline)
        for source in self._sources:
            merged.update(dict.fromkeys(source.secrets))
        self._current = tuple(merged)
        if not self._current:
            log.error("no webhook secret configured: every request will be refused (401)")


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__
