"""The API client's own HTTP/1.1 connections: the answer parser on bytes, the pool on real
sockets (a scripted server that misbehaves on cue), and the client against the real API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from lbtrain.kube import MODELRUNS, ApiUnreachable, KubeClient, KubeConfig, NotFound
from lbtrain.kube.config import ConfigError
from lbtrain.kube.connections import (
    Answer,
    ConnectionDropped,
    ConnectionPool,
    ProtocolError,
    ResponseParser,
)


# --- the parser ----------------------------------------------------------------------------------
def parse(raw: bytes, *, byte_by_byte: bool = False) -> Answer | None:
    parser = ResponseParser()
    pieces = [raw[i : i + 1] for i in range(len(raw))] if byte_by_byte else [raw]
    for n, piece in enumerate(pieces):
        answer = parser.feed(piece)
        if answer is not None:
            assert n == len(pieces) - 1, "complete before the last byte"
            return answer
    return None


LENGTH = (
    b'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{"a": 1} '
)
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nAudit-Id: x\r\n\r\n"
    b"5;ext=1\r\nhello\r\n1a\r\n, abcdefghijklmnopqrstuvwx\r\n0\r\n\r\n"
)


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_a_content_length_answer(byte_by_byte: bool) -> None:
    assert parse(LENGTH, byte_by_byte=byte_by_byte) == Answer(201, b'{"a": 1} ', keep_alive=True)


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_a_chunked_answer_with_extensions(byte_by_byte: bool) -> None:
    answer = parse(CHUNKED, byte_by_byte=byte_by_byte)
    assert answer == Answer(200, b"hello, abcdefghijklmnopqrstuvwx", keep_alive=True)


def test_a_chunked_answer_with_trailers() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n"
    assert parse(raw) == Answer(200, b"ok", keep_alive=True)
    assert parse(raw[:-2]) is None


def test_interim_answers_are_skipped() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\n" + LENGTH
    assert parse(raw, byte_by_byte=True) == Answer(201, b'{"a": 1} ', keep_alive=True)


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close", False),
        (b"HTTP/1.1 200 OK\r\nconnection: Keep-Alive, Upgrade", True),
        (b"HTTP/1.0 200 OK", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive", True),
    ],
)
def test_whether_the_connection_may_be_reused(head: bytes, keep_alive: bool) -> None:
    answer = parse(head + b"\r\nContent-Length: 2\r\n\r\nok")
    assert answer is not None and answer.keep_alive is keep_alive


def test_no_body_statuses_and_a_body_ended_by_the_close() -> None:
    assert parse(b"HTTP/1.1 204 No Content\r\n\r\n") == Answer(204, b"", keep_alive=True)
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npartial ") is None
    assert parser.feed(b"and the rest") is None
    assert parser.at_eof() == Answer(200, b"partial and the rest", keep_alive=False)


def test_a_cut_answer_is_not_complete_at_eof() -> None:
    for raw in (LENGTH[:-3], CHUNKED[:-5], LENGTH[:20]):
        parser = ResponseParser()
        assert parser.feed(raw) is None
        assert parser.at_eof() is None
        assert parser.started


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "status line"),
        (b"HTTP/1.1 abc OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n", "CRLF"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1", "after the end"),
    ],
)
def test_malformed_answers_are_protocol_errors(raw: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        ResponseParser().feed(raw)


# --- the pool, against a scripted server ------------------------------------------------------------
Script = Callable[[int, int, bytes, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class ScriptedServer:
    """Reads requests (head and Content-Length body) and lets `script(connection, request
    number on it, request bytes, writer)` answer; counts the connections it accepted."""

    script: Script
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn, n = self.connections, 0
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                n += 1
                await self.script(conn, n, request, writer)
                if writer.is_closing():
                    return
        writer.close()


@contextlib.asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(script)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


def ok(body: bytes = b'{"kind":"Status"}') -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def always_ok(conn: int, n: int, request: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(ok())


def client_for(port: int, *, path: str = "", timeout: float = 5.0) -> KubeClient:
    return KubeClient(KubeConfig(server=f"http://127.0.0.1:{port}{path}"), request_timeout=timeout)


async def test_one_connection_carries_request_after_request() -> None:
    async with scripted(always_ok) as server, client_for(server.port) as kube:
        for _ in range(20):
            await kube.request("GET", "/version")
        assert server.connections == 1


async def test_concurrent_requests_open_at_most_one_connection_each() -> None:
    async def slow_ok(conn: int, n: int, request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.01)
        writer.write(ok())

    async with scripted(slow_ok) as server, client_for(server.port) as kube:
        for _ in range(5):
            await asyncio.gather(*(kube.request("GET", "/version") for _ in range(4)))
        assert server.connections == 4
        assert len(server.requests) == 20


async def test_a_server_behind_a_path_gets_it_in_every_request_line() -> None:
    async with scripted(always_ok) as server, client_for(server.port, path="/k8s/c-1/") as kube:
        await kube.request("GET", "/api/v1/pods", params={"labelSelector": "a=b,c in (d)"})
        request_line = server.requests[0].split(b"\r\n", 1)[0]
        assert (
            request_line == b"GET /k8s/c-1/api/v1/pods?labelSelector=a%3Db%2Cc+in+%28d%29 HTTP/1.1"
        )


async def test_an_answer_that_says_close_is_not_reused() -> None:
    async def closing(conn: int, n: int, request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
        writer.close()

    async with scripted(closing) as server, client_for(server.port) as kube:
        for _ in range(3):
            assert await kube.request("GET", "/version") == {}
        assert server.connections == 3


async def drop_second_request(
    conn: int, n: int, request: bytes, writer: asyncio.StreamWriter
) -> None:
    """Answer the first request on a connection; close without answering the second, as a
    server whose idle timeout fires just as the client reuses the connection."""
    if n == 1:
        writer.write(ok())
    else:
        writer.close()


async def test_a_get_on_a_connection_the_server_dropped_goes_again_on_a_new_one() -> None:
    async with scripted(drop_second_request) as server, client_for(server.port) as kube:
        await kube.request("GET", "/version")
        assert await kube.request("GET", "/version") == {"kind": "Status"}
        assert server.connections == 2
        assert len(server.requests) == 3


async def test_a_post_on_a_connection_the_server_dropped_is_not_repeated() -> None:
    async with scripted(drop_second_request) as server, client_for(server.port) as kube:
        await kube.request("POST", "/apis/x", body={})
        with pytest.raises(ApiUnreachable, match=r"ConnectionDropped.*before answering"):
            await kube.request("POST", "/apis/x", body={})
        assert len(server.requests) == 2  # sent once: the caller decides whether to repeat
        await kube.request("POST", "/apis/x", body={})  # and the next one gets a new connection
        assert server.connections == 2


async def test_an_answer_cut_in_the_middle_is_unreachable_not_retried() -> None:
    async def cut(conn: int, n: int, request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"kind"')
        writer.close()

    async with scripted(cut) as server, client_for(server.port) as kube:
        with pytest.raises(ApiUnreachable, match="in the middle of the answer"):
            await kube.request("GET", "/version")
        assert len(server.requests) == 1


async def test_a_server_that_never_answers_times_out_and_its_connection_is_dropped() -> None:
    async def silent_first(conn: int, n: int, request: bytes, writer: asyncio.StreamWriter) -> None:
        if conn > 1:
            writer.write(ok())

    async with scripted(silent_first) as server, client_for(server.port, timeout=0.3) as kube:
        with pytest.raises(ApiUnreachable, match="TimeoutError"):
            await kube.request("GET", "/version")
        assert await kube.request("GET", "/version") == {"kind": "Status"}
        assert server.connections == 2


async def test_a_cancelled_request_does_not_leave_its_connection_in_the_pool() -> None:
    answered = asyncio.Event()

    async def late(conn: int, n: int, request: bytes, writer: asyncio.StreamWriter) -> None:
        if conn == 1:
            await answered.wait()  # the answer comes after the caller gave up
        writer.write(ok())

    async with scripted(late) as server, client_for(server.port) as kube:
        task = asyncio.create_task(kube.request("GET", "/version"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        answered.set()
        assert await kube.request("GET", "/version") == {"kind": "Status"}
        assert server.connections == 2


async def test_garbage_from_the_server_is_unreachable_with_the_reason() -> None:
    async def garbage(conn: int, n: int, request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    async with scripted(garbage) as server, client_for(server.port) as kube:
        with pytest.raises(ApiUnreachable, match=r"ProtocolError.*status line"):
            await kube.request("GET", "/version")


async def test_closing_the_pool_fails_the_request_in_flight() -> None:
    async def never(conn: int, n: int, request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async with scripted(never) as server:
        pool = ConnectionPool("127.0.0.1", server.port, ssl_context=None)
        task = asyncio.create_task(pool.exchange("GET", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        await asyncio.sleep(0.1)
        pool.close()
        with pytest.raises(ConnectionDropped):
            await task


async def test_a_closed_port_is_unreachable() -> None:
    async with scripted(always_ok) as server:
        port = server.port
    async with client_for(port) as kube:
        with pytest.raises(ApiUnreachable, match="GET /version"):
            await kube.request("GET", "/version")


async def test_a_token_file_that_cannot_be_read_is_unreachable(tmp_path) -> None:
    """As with aiohttp's client before: the webhook answers 503 and the operator retries, where
    a bare FileNotFoundError would be a 500 and a crashed handler."""
    async with scripted(always_ok) as server:
        config = KubeConfig(
            server=f"http://127.0.0.1:{server.port}", token_file=str(tmp_path / "gone")
        )
        async with KubeClient(config) as kube:
            with pytest.raises(ApiUnreachable, match="GET /version: FileNotFoundError"):
                await kube.request("GET", "/version")


# --- the client against the real API server ------------------------------------------------------
@pytest.mark.testbed
async def test_the_real_api_server_over_tls(kube: KubeClient, namespace: str, crds: None) -> None:
    """Creates, a list long enough to come back chunked, errors and deletes, on one client."""
    names = [f"run-{secrets.token_hex(3)}-{i}" for i in range(40)]
    for name in names:
        spec = {"modelRunId": f"c{secrets.token_hex(12)}", "modelType": "ner"}
        await kube.create(MODELRUNS, {"metadata": {"name": name}, "spec": spec}, namespace)
    listed = await kube.list(MODELRUNS, namespace)
    assert sorted(item["metadata"]["name"] for item in listed["items"]) == sorted(names)
    with pytest.raises(NotFound, match="not found"):
        await kube.get(MODELRUNS, "no-such-run", namespace)
    await kube.delete(MODELRUNS, names[0], namespace)
    assert (
        kube._connections().open_connections == 1
    )  # everything above went over one kept-alive connection


async def test_a_rotated_token_file_is_used_from_the_next_request(tmp_path) -> None:
    """As the kubelet rotates a projected service-account token: a new file swapped in."""
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")

    async with scripted(always_ok) as server:
        config = KubeConfig(server=f"http://127.0.0.1:{server.port}", token_file=str(token_file))
        async with KubeClient(config) as kube:
            await kube.request("GET", "/version")
            await kube.request("GET", "/version")
            rotated = tmp_path / "token.new"
            rotated.write_text("second-token\n")
            rotated.replace(token_file)
            await kube.request("GET", "/version")
    sent = [
        line
        for request in server.requests
        for line in request.split(b"\r\n")
        if line.startswith(b"Authorization:")
    ]
    assert sent == [
        b"Authorization: Bearer first-token",
        b"Authorization: Bearer first-token",
        b"Authorization: Bearer second-token",
    ]


def test_an_api_server_address_that_is_not_http_is_refused_up_front() -> None:
    with pytest.raises(ConfigError, match=r"'unix:///run/kube\.sock' is not an http\(s\) URL"):
        KubeClient(KubeConfig(server="unix:///run/kube.sock"))
