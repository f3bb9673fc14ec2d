"""The webhook's TLS: one server SSLContext whose certificate follows the mounted files.

On a cluster cert-manager renews the certificate Secret before it expires, and the kubelet
updates the mounted files by an atomic swap: it writes a new timestamped folder and renames a
new `..data` symlink over the old one. A pair loaded once at startup would be served until it
expires, so the webhook polls the files and picks up a new pair without a restart.

Why an SNI callback: aiohttp's `web.TCPSite` hands its context to `loop.create_server(ssl=...)`
and asyncio (and uvloop) keep that object for the server's life, wrapping every new connection
with it; there is no public way to give a running server another context. Loading the new pair
into that same context in place is no better: `load_cert_chain` sets the certificate before it
checks the key, so a key that does not match would leave the context half-changed. Instead the
server's context carries an `sni_callback`, which OpenSSL calls during every handshake (with
server name None when the client sent none), and the callback points the connection at the
newest good context (`SSLObject.context = ...`, i.e. `SSL_set_SSL_CTX`). A new pair is loaded
into a fresh context first; only when that succeeds is it swapped in. Connections already open
keep the pair they started with.

A pair that does not load (the key does not match the certificate, a file half-written, gone or
unreadable) keeps the last good pair and logs an error naming the files and OpenSSL's reason,
never their contents. It is tried again when either file changes once more.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from lbtrain.logs import get_logger
from lbtrain_webhook.secret_store import Stamp, file_stamp

log = get_logger("lbtrain.webhook.tls")


class TlsError(Exception):
    """The certificate or key cannot be used at startup; the message names the files."""


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context (TLS 1.2 or newer) serving the pair; raises ssl.SSLError or OSError."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def why(exc: BaseException) -> str:
    """OpenSSL's or the OS's reason, without any file content."""
    if isinstance(exc, ssl.SSLError):
        return f"{exc.library or 'SSL'}: {exc.reason or type(exc).__name__}"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


class ReloadingTls:
    """The context to serve (`context`), and the pair behind it kept up to date."""

    def __init__(self, cert: Path, key: Path) -> None:
        """Load the pair now; raise TlsError naming the files if it cannot be served."""
        self.cert, self.key = Path(cert), Path(key)
        self._stamps: tuple[Stamp, Stamp] | None
        try:
            self._stamps = self._read_stamps()
            self.context = server_context(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(
                f"cannot serve TLS with certificate {self.cert} and key {self.key}: {why(exc)}"
            ) from exc
        self._current = self.context
        self.context.sni_callback = self._choose

    def _read_stamps(self) -> tuple[Stamp, Stamp]:
        return file_stamp(self.cert), file_stamp(self.key)

    def _choose(self, conn: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if conn.context is not self._current:
            conn.context = self._current

    def reload_if_changed(self) -> bool:
        """Load the pair again if either file changed; True when a new pair is now served."""
        try:
            stamps = self._read_stamps()
        except OSError as exc:
            if self._stamps is not None:
                self._stamps = None
                log.error(
                    "cannot read the TLS certificate or key; serving the last good pair",
                    extra={"cert": str(self.cert), "key": str(self.key), "error": why(exc)},
                )
            return False
        if stamps == self._stamps:
            return False
        # Remember the stamps even when the pair fails, so that a broken pair logs once and is
        # tried again when a file changes (the other half of a pair written in two steps).
        self._stamps = stamps
        try:
            fresh = server_context(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            log.error(
                "cannot load the new TLS certificate and key; serving the last good pair",
                extra={"cert": str(self.cert), "key": str(self.key), "error": why(exc)},
            )
            return False
        self._current = fresh
        log.info("TLS certificate reloaded", extra={"cert": str(self.cert)})
        return True

    async def poll(self, interval: float) -> None:
        """Reload a changed pair every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.reload_if_changed()
            except Exception as exc:  # never let the poller die quietly
                log.error("TLS reload failed", extra={"error": type(exc).__name__})
