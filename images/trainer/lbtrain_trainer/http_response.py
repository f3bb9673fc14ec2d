"""An ``http.client`` response that reads its header lines without the ``email`` package.

``http.client`` hands the header block of every response to ``email.parser``, a general MIME
parser: for a small image over a keep-alive connection that was a fifth of the Python the whole
download took (``py-spy --gil``, 16 download threads on 2 cores), and the media step ran 13%
faster without it (1,910 against 2,170 files/s, 320x240 PNGs on loopback). Media servers send a
handful of plain ``Name: value`` lines, so :class:`LeanResponse` splits them itself into the
same :class:`http.client.HTTPMessage` (``getheader`` and ``headers`` work as before) and sets
what ``HTTPResponse.begin`` sets; body reading (length, chunked, close) is ``http.client``'s.
Obsolete line folding (a line that starts with a space continues the previous header) is kept.

Plain HTTP connections open their sockets with
:func:`lbtrain_trainer.kernel_timeouts.create_connection` (blocking, the kernel keeps the
timeout: no ``poll`` before each call), and responses read through a
:class:`~lbtrain_trainer.kernel_timeouts.SocketReader`, so a read that times out is a
:class:`TimeoutError`, not an early end of the body.
"""

from __future__ import annotations

import http.client
import io
import socket
from typing import Any

from lbtrain_trainer.kernel_timeouts import SocketReader, create_connection

MAX_LINE = 65536  # http.client's limits
MAX_HEADERS = 100


def parse_header_lines(lines: list[bytes]) -> http.client.HTTPMessage:
    """The header lines of a response (without the blank line that ends them) as a message."""
    message = http.client.HTTPMessage()
    name, value = "", ""
    for raw in lines:
        line = raw.decode("iso-8859-1").rstrip("\r\n")
        if line[:1] in (" ", "\t") and name:  # folded: continues the previous header
            value += " " + line.strip()
            continue
        if name:
            message[name] = value
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
    if name:
        message[name] = value
    return message


class LeanResponse(http.client.HTTPResponse):
    """``HTTPResponse`` with :func:`parse_header_lines` instead of ``email.parser``, reading
    through a :class:`SocketReader`."""

    def __init__(
        self, sock: socket.socket, debuglevel: int = 0, method: str | None = None, url: Any = None
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        # ``detach``: the SocketIO under ``makefile``'s reader now belongs to the new one.
        self.fp = io.BufferedReader(SocketReader(self.fp.detach()))

    def _header_lines(self) -> list[bytes]:
        lines: list[bytes] = []
        while True:
            line = self.fp.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                raise http.client.LineTooLong("header line")
            if line in (b"\r\n", b"\n", b""):
                return lines
            lines.append(line)
            if len(lines) > MAX_HEADERS:
                raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")

    def begin(self) -> None:
        if self.headers is not None:
            return  # already read
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            self._header_lines()  # an interim 100 answer: its headers are skipped
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = parse_header_lines(self._header_lines())
        encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(encoding and encoding.lower() == "chunked")
        self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            if self.length is not None and self.length < 0:
                self.length = None
        no_body = status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED)
        if no_body or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True  # the body runs until the server closes


class LeanHTTPConnection(http.client.HTTPConnection):
    response_class = LeanResponse

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The hook http.client connects through (its own tests replace it the same way).
        self._create_connection = create_connection


class LeanHTTPSConnection(http.client.HTTPSConnection):
    """Sockets with Python timeouts: a blocking TLS socket whose read the kernel timed out would
    be read again by ``ssl`` (it waits for more data on a blocking socket), never timing out.
    A TLS handshake per connection costs far more than the ``poll`` calls saved."""

    response_class = LeanResponse
