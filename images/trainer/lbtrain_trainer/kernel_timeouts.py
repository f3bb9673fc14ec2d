"""Sockets whose timeouts the kernel keeps: blocking calls, one system call each.

A Python socket with a timeout is non-blocking underneath, and every ``connect``, ``send`` and
``recv`` on it is preceded by a ``poll`` that waits for it to be ready. That is five extra system
calls for a small file from a server that opens a connection per file (connect, send, three
reads), and each one releases and retakes the GIL: among 16 download threads, every hand-off of
the GIL costs a wake-up and a context switch. The media fetcher's sockets are blocking instead,
with ``SO_SNDTIMEO``/``SO_RCVTIMEO`` set to the same timeout, so the kernel enforces it inside
the one call (export stage from a server that closes every connection, 8,000 PNGs, 16 threads:
~80 µs less CPU per file, together with the plain file writes of
:func:`lbtrain_trainer.imagestore.write_file`; see ``bench/README.md``, "export").

What a timeout looks like changes with it, so it is translated back: a blocking ``connect``
the kernel gave up on fails with ``EINPROGRESS`` and a read with ``EAGAIN``; both become
:class:`TimeoutError` with a message that says what timed out. (``socket.SocketIO``, what
``socket.makefile`` reads through, would turn ``EAGAIN`` into an empty read: a timed-out answer
would look like a server that closed the connection early.)

Elsewhere than Linux the socket gets an ordinary Python timeout.
"""

from __future__ import annotations

import io
import socket
import struct
import sys
from typing import Any

KERNEL_TIMEOUTS = sys.platform == "linux"


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))


def set_timeouts(sock: socket.socket, timeout_s: float | None) -> None:
    """Make ``sock`` blocking with the kernel timing out sends, connects and reads after
    ``timeout_s`` (None: never); a Python timeout where the kernel's is not available."""
    if not KERNEL_TIMEOUTS:
        sock.settimeout(timeout_s)
        return
    if timeout_s is None:
        return
    value = _timeval(timeout_s)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)


def create_connection(
    address: tuple[str, int],
    timeout: Any = None,
    source_address: tuple[str, int] | None = None,
) -> socket.socket:
    """``socket.create_connection`` with kernel timeouts (``timeout`` in seconds, or None or
    ``socket._GLOBAL_DEFAULT_TIMEOUT`` for none): the same signature, so ``http.client``
    connections can use it as their ``_create_connection``."""
    host, port = address
    timeout_s = timeout if isinstance(timeout, int | float) else None
    errors: list[OSError] = []
    for family, kind, proto, _, sockaddr in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            set_timeouts(sock, timeout_s)
            if source_address:
                sock.bind(source_address)
            try:
                sock.connect(sockaddr)
            except BlockingIOError as exc:  # EINPROGRESS: SO_SNDTIMEO ran out
                raise TimeoutError(
                    f"connecting to {host}:{port} timed out after {timeout_s:g} s"
                ) from exc
            return sock
        except OSError as exc:
            sock.close()
            errors.append(exc)
    if errors:
        raise errors[0]
    raise OSError(f"{host} resolves to no address")


class SocketReader(io.RawIOBase):
    """What ``socket.makefile`` reads through (a ``socket.SocketIO``), with a read that timed
    out raising :class:`TimeoutError`: ``SocketIO`` answers the kernel's ``EAGAIN`` with None,
    which the buffered reader above it would take for the end of the answer. Closing it closes
    the ``SocketIO``, which releases the socket as ``makefile``'s reader does (the socket itself
    closes once its connection has closed it too)."""

    def __init__(self, raw: io.RawIOBase) -> None:
        super().__init__()
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        read = self._raw.readinto(buffer)
        if read is None:
            raise TimeoutError("the server sent nothing within the read timeout")
        return read

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
