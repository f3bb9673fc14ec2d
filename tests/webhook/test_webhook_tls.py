"""The webhook serves a renewed certificate without a restart, and never a broken one.

Real certificate pairs (the testbed's PKI), the real server on a real port, a real TLS client
that verifies what it is served, and the files swapped exactly as the kubelet updates a mounted
Secret when cert-manager renews it: a new timestamped folder, then a new `..data` symlink renamed
over the old one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from lbtrain_dev.testbed.pki import write_pki
from lbtrain_webhook.server import Server
from lbtrain_webhook.settings import Settings
from lbtrain_webhook.tls import ReloadingTls, TlsError

pytestmark = pytest.mark.testbed

CERT, KEY = "tls.crt", "tls.key"


@dataclass(frozen=True)
class Pair:
    cert: bytes
    key: bytes
    ca: Path
    serial: int


def make_pair(folder: Path) -> Pair:
    """A fresh CA and a serving certificate for 127.0.0.1 (the testbed's API server pair)."""
    write_pki(folder)
    cert = (folder / "apiserver.crt").read_bytes()
    return Pair(
        cert,
        (folder / "apiserver.key").read_bytes(),
        folder / "ca.crt",
        x509.load_pem_x509_certificate(cert).serial_number,
    )


class SecretVolume:
    """A folder laid out and updated the way the kubelet mounts a Secret (its AtomicWriter):
    `tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>`; an update writes a new timestamped
    folder, points `..data_tmp` at it, renames that over `..data` and removes the old folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self._current: Path | None = None
        for name in (CERT, KEY):
            (root / name).symlink_to(Path("..data") / name)

    @property
    def cert(self) -> Path:
        return self.root / CERT

    @property
    def key(self) -> Path:
        return self.root / KEY

    def write(self, cert: bytes, key: bytes) -> None:
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime()) + f".{time.time_ns()}"
        folder = self.root / f"..{stamp}"
        folder.mkdir()
        (folder / CERT).write_bytes(cert)
        (folder / KEY).write_bytes(key)
        (folder / KEY).chmod(0o600)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(folder.name)
        tmp.rename(self.root / "..data")
        if self._current is not None:
            for child in self._current.iterdir():
                child.unlink()
            self._current.rmdir()
        self._current = folder


def trusting(pair: Pair) -> ssl.SSLContext:
    """A client that verifies the server against the CA of `pair` (and its name, 127.0.0.1)."""
    return ssl.create_default_context(cafile=str(pair.ca))


def any_cert() -> ssl.SSLContext:
    """A client that takes whatever it is served, to read which certificate that is. (Trusting
    every pair's CA at once does not work: the testbed's CAs all have the same name.)"""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def served_serial(port: int, ctx: ssl.SSLContext) -> int:
    """Connect anew, verify the certificate, ask /healthz; the serial of the served cert."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        reply = await reader.read()
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    finally:
        writer.close()
        await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


async def wait_for_serial(port: int, ctx: ssl.SSLContext, serial: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen = await served_serial(port, ctx)
    while seen != serial and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        seen = await served_serial(port, ctx)
    assert seen == serial, f"still served serial {seen:x} after {timeout}s, want {serial:x}"


async def wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, f"no log line {text!r} after {timeout}s"
        await asyncio.sleep(0.05)


@pytest.fixture
def volume(tmp_path: Path) -> SecretVolume:
    return SecretVolume(tmp_path / "webhook-tls")


def tls_settings(webhook_settings: Settings, volume: SecretVolume) -> Settings:
    return dataclasses.replace(
        webhook_settings,
        host="127.0.0.1",
        port=0,
        tls_cert=volume.cert,
        tls_key=volume.key,
        secret_poll_interval=0.1,
    )


async def test_renewed_certificate_is_served_to_new_connections(
    webhook_settings: Settings, volume: SecretVolume, tmp_path: Path
) -> None:
    old, new = make_pair(tmp_path / "old"), make_pair(tmp_path / "new")
    volume.write(old.cert, old.key)
    server = Server(tls_settings(webhook_settings, volume))
    await server.start()
    try:
        assert await served_serial(server.port, trusting(old)) == old.serial
        volume.write(new.cert, new.key)
        await wait_for_serial(server.port, any_cert(), new.serial, timeout=5)
        # A client that verifies against the new CA is served now, without a restart.
        assert await served_serial(server.port, trusting(new)) == new.serial
    finally:
        await server.stop()


@pytest.mark.parametrize(
    "breakage",
    ["key does not match", "certificate cut short"],
)
async def test_broken_pair_keeps_serving_the_last_good_one(
    webhook_settings: Settings,
    volume: SecretVolume,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    breakage: str,
) -> None:
    caplog.set_level(logging.INFO, logger="lbtrain.webhook.tls")
    old, new = make_pair(tmp_path / "old"), make_pair(tmp_path / "new")
    volume.write(old.cert, old.key)
    server = Server(tls_settings(webhook_settings, volume))
    await server.start()
    try:
        ctx = trusting(old)
        assert await served_serial(server.port, ctx) == old.serial
        if breakage == "key does not match":
            volume.write(new.cert, old.key)
        else:
            volume.write(new.cert[: len(new.cert) // 2], new.key)
        await wait_for_log(caplog, "cannot load the new TLS certificate and key", timeout=5)
        assert await served_serial(server.port, ctx) == old.serial

        [error] = [r for r in caplog.records if r.name == "lbtrain.webhook.tls"]
        assert error.levelno == logging.ERROR
        fields = error.__dict__
        assert (fields["cert"], fields["key"]) == (str(volume.cert), str(volume.key))
        logged = f"{error.getMessage()} {fields}"
        for secret in (old.key, new.key):
            body = b"".join(secret.splitlines()[1:-1]).decode()
            assert body[:16] not in logged, "key material in the log"

        # The next good pair is picked up: the failure did not stop the poller.
        volume.write(new.cert, new.key)
        await wait_for_serial(server.port, any_cert(), new.serial, timeout=5)
        assert await served_serial(server.port, trusting(new)) == new.serial
    finally:
        await server.stop()


def test_unusable_pair_at_startup_names_the_files(volume: SecretVolume, tmp_path: Path) -> None:
    old, new = make_pair(tmp_path / "old"), make_pair(tmp_path / "new")
    volume.write(new.cert, old.key)
    with pytest.raises(TlsError) as caught:
        ReloadingTls(volume.cert, volume.key)
    message = str(caught.value)
    assert str(volume.cert) in message and str(volume.key) in message
    assert "KEY_VALUES_MISMATCH" in message or "key values mismatch" in message
