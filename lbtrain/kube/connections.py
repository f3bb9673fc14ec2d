"""Keep-alive HTTP/1.1 connections to the API server, for request-and-answer verbs.

Why not aiohttp's client: a ModelRun create through aiohttp's client cost the webhook ~250 µs
of CPU (building a `ClientRequest`, yarl URLs, header multidicts, its payload and writer
layers), more than the rest of the webhook's request together; a request here is one bytes
object written once (one TLS record, one `write`) and an answer parsed from the bytes the
connection hands over. The API server speaks plain HTTP/1.1 to such clients: a status line,
headers, and a body with a Content-Length or chunked, which is all `ResponseParser` needs to
know. Watches, long-lived streams where per-request cost does not matter, stay on aiohttp
(`client.py`).

`ResponseParser` is pure (bytes in, an answer out) and unit-tested on its own; `ConnectionPool`
is the thin I/O edge around it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
NO_BODY_STATUSES = frozenset({204, 304})


class ProtocolError(Exception):
    """The server sent something that is not an HTTP/1.1 answer."""


class ConnectionDropped(ConnectionError):
    """The connection closed before the whole answer came. `answered` says whether any byte of
    the answer had arrived (if not, a request on a reused connection may simply have met the
    server's idle close, and an idempotent request can go again on a new connection)."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, body, and whether the connection may carry another request."""

    status: int
    body: bytes
    keep_alive: bool


class ResponseParser:
    """Incremental parser of one HTTP/1.x answer: `feed` bytes until it returns an Answer.

    Interim 1xx answers are skipped. The body is delimited by Content-Length, by chunked
    transfer coding, or (no length, no chunking) by the server closing: `at_eof` finishes it.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._started = False
        self._status = 0
        self._keep_alive = True
        self._body_start = -1  # where the body begins in _buf, once the head is parsed
        self._length: int | None = None  # Content-Length
        self._chunked = False
        self._chunk_pos = 0  # chunked: where the next chunk-size line begins
        self._chunks: list[bytes] = []

    @property
    def started(self) -> bool:
        """Whether any byte of the answer has arrived."""
        return self._started

    def feed(self, data: bytes) -> Answer | None:
        """Take the next bytes; the Answer once it is complete, else None.
        Raises ProtocolError on a malformed answer."""
        if data:
            self._started = True
            self._buf += data
        while self._body_start < 0:
            if not self._parse_head():
                return None
        if self._chunked:
            return self._feed_chunked()
        if self._length is not None:
            end = self._body_start + self._length
            if len(self._buf) < end:
                return None
            if len(self._buf) > end:
                raise ProtocolError("bytes after the end of the answer")
            return Answer(self._status, bytes(self._buf[self._body_start : end]), self._keep_alive)
        return None  # delimited by the close: see at_eof

    def at_eof(self) -> Answer | None:
        """The server closed: the Answer if that is how its body ends, else None (incomplete)."""
        if self._body_start >= 0 and not self._chunked and self._length is None:
            return Answer(self._status, bytes(self._buf[self._body_start :]), keep_alive=False)
        return None

    def _parse_head(self) -> bool:
        """Parse the status line and headers once they are all in; False while they are not."""
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > 1 << 20:
                raise ProtocolError("answer headers longer than 1 MiB")
            return False
        head = bytes(self._buf[:end])
        status_line, _, fields = head.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:  # 100 Continue and friends: the real answer follows
            del self._buf[: end + 4]
            return False
        # Only three headers matter; finding them in the lowered head is several times faster
        # than splitting every line (the API server sends about eight).
        fields = b"\r\n" + fields.lower()
        keep_alive = parts[0] != b"HTTP/1.0"
        length: int | None = None
        value = _header(fields, b"content-length")
        if value is not None:
            if not value.isdigit():
                raise ProtocolError(f"bad Content-Length: {value[:40]!r}")
            length = int(value)
        value = _header(fields, b"transfer-encoding")
        chunked = value is not None and value.endswith(b"chunked")
        value = _header(fields, b"connection")
        if value is not None:
            tokens = {t.strip() for t in value.split(b",")}
            if b"close" in tokens:
                keep_alive = False
            elif b"keep-alive" in tokens:
                keep_alive = True
        if status in NO_BODY_STATUSES:
            length, chunked = 0, False
        elif chunked:
            length = None
        self._status, self._keep_alive = status, keep_alive
        self._length, self._chunked = length, chunked
        self._body_start = self._chunk_pos = end + 4
        return True

    def _feed_chunked(self) -> Answer | None:
        buf = self._buf
        while True:
            line_end = buf.find(b"\r\n", self._chunk_pos)
            if line_end < 0:
                return None
            size_field = bytes(buf[self._chunk_pos : line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_field, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size: {size_field[:40]!r}") from None
            if size == 0:
                # The last chunk, then optional trailers, then an empty line.
                if buf[line_end + 2 : line_end + 4] == b"\r\n":
                    done = line_end + 4
                else:
                    trailers_end = buf.find(b"\r\n\r\n", line_end + 2)
                    if trailers_end < 0:
                        return None
                    done = trailers_end + 4
                if len(buf) > done:
                    raise ProtocolError("bytes after the end of the answer")
                return Answer(self._status, b"".join(self._chunks), self._keep_alive)
            data_end = line_end + 2 + size
            if len(buf) < data_end + 2:
                return None
            if buf[data_end : data_end + 2] != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
            self._chunks.append(bytes(buf[line_end + 2 : data_end]))
            self._chunk_pos = data_end + 2


def _header(fields: bytes, name: bytes) -> bytes | None:
    """The value of header `name` in lowered header lines that each begin with CRLF."""
    start = fields.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    end = fields.find(b"\r\n", start)
    return fields[start : end if end >= 0 else len(fields)].strip()


class _Connection(asyncio.Protocol):
    """One connection: at most one request in flight; idle in the pool between requests."""

    def __init__(self) -> None:
        # An asyncio.Transport in spirit; uvloop's TLS transport is not a subclass of it.
        self.transport: Any = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._parser: ResponseParser | None = None
        self._waiter: asyncio.Future[Answer] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._parser is None or self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        try:
            answer = self._parser.feed(data)
        except ProtocolError as exc:
            self._waiter.set_exception(exc)
            self.close()
            return
        if answer is not None:
            self._waiter.set_result(answer)

    def eof_received(self) -> bool | None:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, parser = self._waiter, self._parser
        if waiter is None or waiter.done() or parser is None:
            return
        answer = parser.at_eof()
        if answer is not None:
            waiter.set_result(answer)
            return
        detail = f": {exc}" if exc else ""
        state = "in the middle of the answer" if parser.started else "before answering"
        waiter.set_exception(
            ConnectionDropped(
                f"the server closed the connection {state}{detail}", answered=parser.started
            )
        )

    # the pool's side
    async def exchange(self, request: bytes) -> Answer:
        self._parser = ResponseParser()
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await self._waiter
        finally:
            self._parser = self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class ConnectionPool:
    """Keep-alive connections to one server, at most `limit` at a time, reused most recent
    first (so a quiet client keeps one warm connection, not `limit` cold ones).

    An idempotent request whose reused connection turns out closed before any byte of the
    answer (the server's idle timeout racing our reuse) goes once more on a new connection, as
    aiohttp does; a POST or PATCH is not repeated here: its caller decides.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        limit: int = 64,
        connect_timeout: float = 5.0,
        idle_timeout: float = 60.0,
    ) -> None:
        self.host, self.port = host, port
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout  # below the API server's own (90 s): we close first
        self._slots = asyncio.Semaphore(limit)
        self._idle: deque[_Connection] = deque()
        self._all: set[_Connection] = set()
        self._closed = False

    async def exchange(self, method: str, request: bytes) -> Answer:
        """Send one request's bytes; the answer. Raises OSError (ConnectionDropped, refused,
        TLS), TimeoutError (connecting), ProtocolError."""
        async with self._slots:
            conn = self._take_idle()
            if conn is not None:
                try:
                    return await self._exchange_on(conn, request)
                except ConnectionDropped as exc:
                    if exc.answered or method not in IDEMPOTENT_METHODS:
                        raise
            return await self._exchange_on(await self._connect(), request)

    async def _exchange_on(self, conn: _Connection, request: bytes) -> Answer:
        """One exchange on `conn`; afterwards it goes back to the pool if it can carry another
        request, and is closed otherwise (always after a failure, a timeout or a cancellation
        mid-answer: the connection is spent)."""
        try:
            answer = await conn.exchange(request)
        except BaseException:
            self._discard(conn)
            raise
        if answer.keep_alive and not conn.closed and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            self._discard(conn)
        return answer

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self._idle_timeout:
                return conn
            self._discard(conn)
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connecting = loop.create_connection(
            _Connection,
            self.host,
            self.port,
            ssl=self._ssl,
            server_hostname=self.host if self._ssl is not None else None,
        )
        _, conn = await asyncio.wait_for(connecting, self._connect_timeout)
        self._all.add(conn)
        return conn

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._all.discard(conn)

    @property
    def open_connections(self) -> int:
        """Connections open now, idle or carrying a request."""
        return sum(not conn.closed for conn in self._all)

    def close(self) -> None:
        """Close every connection; requests in flight fail with ConnectionDropped."""
        self._closed = True
        self._idle.clear()
        for conn in list(self._all):
            conn.close()
        self._all.clear()
