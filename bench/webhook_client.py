"""The webhook bench's load generator client: the least CPU per request a client can spend.

The generator shares the machine's cores with the servers it measures, so any CPU it spends is
taken from them: an aiohttp client costs about as much per request as the lightest server
measured. This client writes each request as one bytes object and reads exactly the answer,
over one keep-alive HTTP/1.1 connection per simulated client (TLS to the API server).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from lbtrain.kube import KubeConfig


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time: it writes the request's
    bytes and waits for the whole answer (Content-Length or chunked). Nothing else: an aiohttp
    client costs about as much CPU per request as the lightest server measured here, and on a
    machine whose cores the generator shares with the servers that would be measured instead."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        status = self._complete()
        if status and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed: {exc}"))

    def _complete(self) -> int:
        """The status once the buffer holds a whole answer (which it then drops), else 0."""
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return 0
        head = bytes(buf[:end]).lower()
        start = end + 4
        if b"\r\ntransfer-encoding: chunked" in head:
            pos = start
            while True:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    return 0
                size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
                pos = line_end + 2 + size + 2
                if pos > len(buf):
                    return 0
                if size == 0:
                    break
        else:
            found = re.search(rb"\r\ncontent-length: *(\d+)", head)
            pos = start + (int(found.group(1)) if found else 0)
            if pos > len(buf):
                return 0
        del buf[:pos]
        return int(head[9:12])

    async def exchange(self, request: bytes) -> int:
        """Send one request; answer its status code once the whole answer is in."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


@dataclass(frozen=True)
class Target:
    """Where requests go: a server's address, TLS or not, and headers every request carries."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None
    headers: str = ""

    @classmethod
    def local(cls, port: int) -> Target:
        return cls("127.0.0.1", port)

    @classmethod
    def api_server(cls, config: KubeConfig) -> Target:
        url = urlsplit(config.server)
        context = config.ssl_context()
        token = config.bearer_token()
        return cls(
            url.hostname or "127.0.0.1",
            url.port or 443,
            context if isinstance(context, ssl.SSLContext) else None,
            f"Authorization: Bearer {token}\r\n" if token else "",
        )

    async def connect(self) -> HttpConnection:
        _, conn = await asyncio.get_running_loop().create_connection(
            HttpConnection, self.host, self.port, ssl=self.tls
        )
        return conn

    def request(self, method: str, path: str, body: bytes = b"", extra: str = "") -> bytes:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.headers}{extra}"
            f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body
