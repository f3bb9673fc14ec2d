"""The media fetcher against a real keep-alive HTTP server on loopback (redirects, idle
connections the server closed, a forward proxy with credentials, HTTPS straight and through a
CONNECT tunnel) and the pure pieces it is
made of (routes, body decoding, the image header sniff)."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import io
import socket
import ssl
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator

import pytest

from lbtrain_dev.media_server import MediaServer
from lbtrain_trainer import fetcher, media
from lbtrain_trainer.fetcher import (
    BrokenMediaError,
    Fetcher,
    Route,
    TransientMediaError,
    decode_body,
    plan_route,
)
from lbtrain_trainer.http_response import LeanResponse, parse_header_lines
from lbtrain_trainer.imagestore import sniff

pytest.importorskip("PIL")
from PIL import Image


def _image(size: tuple[int, int], fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 160, 20)).save(buffer, format=fmt, **save)
    return buffer.getvalue()


@pytest.fixture
def server() -> Iterator[MediaServer]:
    with MediaServer.running() as running:
        yield running


def test_redirects_are_followed_and_a_loop_is_a_broken_row(server, tmp_path):
    png = _image((30, 20), "PNG")
    server.add("signed/real.png", png, "image/png")
    moved = server.redirect("moved.png", "/signed/real.png", 302)
    relative = server.redirect("dir/rel.png", "../signed/real.png", 307)
    server.redirect("loop-a.png", "/loop-b.png")
    loop = server.redirect("loop-b.png", "/loop-a.png", 301)
    items = [("dr-moved", moved), ("dr-rel", relative), ("dr-loop", loop)]
    summary = media.download_all(
        items, "image", tmp_path, max_side=64, concurrency=1, allow_loopback=True
    )
    assert (summary.fetched, summary.broken) == (2, 1)
    with media.MediaIndex(tmp_path) as index:
        moved_entry, rel_entry, loop_entry = (index.get(row) for row, _ in items)
    assert moved_entry and (tmp_path / str(moved_entry.path)).read_bytes() == png
    assert rel_entry and (tmp_path / str(rel_entry.path)).read_bytes() == png
    assert (
        loop_entry and loop_entry.error == f"more than {fetcher.MAX_REDIRECTS} redirects ({loop})"
    )


def test_a_connection_the_server_closed_while_idle_is_reopened_without_a_retry(tmp_path):
    png = _image((8, 8), "PNG")
    with MediaServer.running(idle_timeout=0.2) as server:
        urls = [server.add(f"{i}.png", png, "image/png") for i in range(3)]
        client = Fetcher(
            attempts=1, allow_loopback=True
        )  # one attempt: only the stale-connection reopen may help
        try:
            assert client.get(urls[0]) == png
            time.sleep(0.6)  # the server has closed the idle connection by now
            assert client.get(urls[1]) == png
            assert client.get(urls[2]) == png  # and the new connection is kept alive
        finally:
            client.close()
        assert server.requests == 3 and server.connections == 2


def test_a_proxy_from_the_environment_is_used_with_its_credentials(server, monkeypatch):
    png = _image((8, 8), "PNG")
    server.add("via-proxy.png", png, "image/png")
    host_port = server.base_url.removeprefix("http://")
    # The URL names a host that never resolves: only the proxy can answer for it.
    monkeypatch.setenv("http_proxy", f"http://lb%40user:s3cret@{host_port}")
    monkeypatch.setenv("no_proxy", "localhost")
    client = Fetcher(attempts=1, allow_loopback=True)
    try:
        assert client.get("http://media.invalid/via-proxy.png") == png
    finally:
        client.close()
    assert server.proxied == 1
    assert server.proxy_authorization == "Basic bGJAdXNlcjpzM2NyZXQ="  # lb@user:s3cret


def test_routes_honour_no_proxy_and_carry_proxy_credentials(monkeypatch):
    monkeypatch.setenv("no_proxy", "internal.example,127.0.0.1")
    proxies = {"http": "http://u:p@proxy.example:3128", "https": "proxy.example:8080"}
    assert plan_route("http://127.0.0.1:9/a.png", proxies) == Route("http", "127.0.0.1", 9)
    assert plan_route("https://internal.example/a", proxies) == Route(
        "https", "internal.example", 443
    )
    assert plan_route("http://bucket.example/a", proxies) == Route(
        "http", "bucket.example", 80, ("proxy.example", 3128, "Basic dTpw")
    )
    assert plan_route("https://bucket.example/a", proxies) == Route(
        "https", "bucket.example", 443, ("proxy.example", 8080, None)
    )
    with pytest.raises(BrokenMediaError, match="not an http"):
        plan_route("ftp://bucket.example/a", proxies)


def test_gzip_and_deflate_bodies_are_decoded():
    body = b"a labelled sentence " * 50
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decode_body(gzip.compress(body), "gzip") == body
    assert decode_body(zlib.compress(body), "deflate") == body
    assert decode_body(raw_deflate.compress(body) + raw_deflate.flush(), "deflate") == body
    assert decode_body(body, None) == body
    with pytest.raises(BrokenMediaError, match="gzip"):
        decode_body(body, "gzip")


@pytest.mark.parametrize(
    ("fmt", "size", "save"),
    [
        ("PNG", (321, 17), {}),
        ("JPEG", (640, 480), {"quality": 80}),
        ("JPEG", (33, 1000), {"progressive": True}),
        ("JPEG", (200, 100), {"exif": b"Exif\x00\x00" + b"\x00" * 64}),  # APP1 before the frame
    ],
)
def test_the_header_sniff_reads_the_size_pil_reads(fmt, size, save):
    data = _image(size, fmt, **save)
    with Image.open(io.BytesIO(data)) as image:
        assert sniff(data) == (fmt, image.size) == (fmt, size)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GIF89a" + b"\x00" * 40,
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 8,  # no IHDR
        b"\xff\xd8\xff\xe0\x00",  # a JPEG cut inside its first segment
        b"\xff\xd8\x00\x00\x00\x00",  # not a marker where one must be
    ],
)
def test_the_header_sniff_leaves_anything_else_to_pil(data):
    assert sniff(data) is None


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for localhost and 127.0.0.1: (certificate file, key file)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", key, "-out", cert, "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(certificate) -> Iterator[MediaServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    with MediaServer.running(tls=context) as running:
        yield running


def test_https_is_verified_against_the_configured_ca_bundle(tls_server, certificate, monkeypatch):
    png = _image((8, 8), "PNG")
    urls = [tls_server.add(f"tls/{i}.png", png, "image/png") for i in range(3)]
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate[0])
    client = Fetcher(attempts=1, allow_loopback=True)
    try:
        assert [client.get(url) for url in urls] == [png] * 3
    finally:
        client.close()
    assert tls_server.connections == 1  # one TLS handshake, then kept alive

    monkeypatch.delenv("REQUESTS_CA_BUNDLE")  # certifi's bundle does not know this server
    untrusting = Fetcher(attempts=1, allow_loopback=True)
    with pytest.raises(TransientMediaError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.get(urls[0])
    untrusting.close()


def test_https_goes_through_the_proxy_in_a_connect_tunnel(
    server, tls_server, certificate, monkeypatch
):
    png = _image((8, 8), "PNG")
    url = tls_server.add("tunnelled.png", png, "image/png").replace("127.0.0.1", "localhost")
    proxy = server.base_url.replace("http://", "http://tunnel:pw@")
    monkeypatch.setenv("https_proxy", proxy)
    monkeypatch.setenv("no_proxy", "nothing.invalid")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate[0])
    client = Fetcher(attempts=1, allow_loopback=True)
    try:
        assert client.get(url) == png
        assert client.get(url) == png  # the tunnel is kept alive
    finally:
        client.close()
    assert server.proxied == 1  # one CONNECT
    assert server.proxy_authorization == "Basic dHVubmVsOnB3"  # tunnel:pw
    assert tls_server.requests == 2 and tls_server.connections == 1


def _response_from(raw: bytes) -> LeanResponse:
    """A response read by ``LeanResponse`` from a real socket the raw answer was sent on."""
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.sendall(raw)
    response = LeanResponse(ours, method="GET")
    ours.close()  # the response holds its own file object
    response.begin()
    return response


def test_header_lines_are_read_as_http_client_reads_them():
    message = parse_header_lines(
        [
            b"Content-Type: image/png\r\n",
            b"Set-Cookie: a=1\r\n",
            b"set-cookie: b=2\r\n",
            b"Location: https://x.example/p?q=1:2\r\n",
            b"X-Folded: first\r\n",
            b"  second\r\n",
        ]
    )
    assert message["content-type"] == "image/png"
    assert message.get_all("Set-Cookie") == ["a=1", "b=2"]
    assert message["Location"] == "https://x.example/p?q=1:2"
    assert message["X-Folded"] == "first second"


def test_lean_responses_read_chunked_and_close_delimited_bodies():
    chunked = _response_from(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    assert (chunked.status, chunked.read()) == (200, b"hello world")
    assert chunked.getheader("Content-Encoding") == "gzip" and not chunked.will_close
    until_close = _response_from(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
    assert until_close.will_close and until_close.read() == b"all of it"
    empty = _response_from(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n")
    assert empty.length == 0 and empty.read() == b""
    with pytest.raises(http.client.UnknownProtocol):
        _response_from(b"HTTP/2.0 200 OK\r\n\r\n")


@pytest.mark.parametrize("http10", [False, True], ids=["keep-alive", "http-1.0"])
def test_a_server_with_nagle_on_costs_no_delayed_ack_per_file(http10):
    """Headers and body in two sends with Nagle on: the body waits for the client's ACK of the
    headers, which Linux delays 40 ms on a busy keep-alive connection: 40 files one after
    another took ~1.8 s before the fetcher asked for quick ACKs, now well under 20 ms each.
    HTTP/1.0 (a connection per file) is the same check for the server that closes each one."""
    files = 40
    with MediaServer.running(nagle=True, http10=http10) as server:
        urls = [server.add(f"n/{i}.png", bytes([i]) * 3000, "image/png") for i in range(files)]
        client = Fetcher(attempts=1, allow_loopback=True)
        try:
            client.get(urls[0])  # the first connection's handshake is not what is measured
            start = time.perf_counter()
            bodies = [client.get(url) for url in urls]
            elapsed = time.perf_counter() - start
        finally:
            client.close()
        assert bodies == [bytes([i]) * 3000 for i in range(files)]
        assert server.connections == (files + 1 if http10 else 1)
    assert elapsed < files * 0.020, f"{elapsed / files * 1000:.1f} ms per file"


def _stalling_server(answer: bytes) -> tuple[socket.socket, str]:
    """A listening socket on loopback that sends ``answer`` to each connection, then nothing."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError):
                conn.recv(65536)
                conn.sendall(answer)
            held.append(conn)  # open and silent until the test ends

    held: list[socket.socket] = []
    threading.Thread(target=serve, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}/x.png"


@pytest.mark.parametrize(
    "answer",
    [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"],
    ids=["no-answer", "body-stalls"],
)
def test_a_server_that_goes_silent_times_out_as_a_transient_error(answer):
    """The sockets are blocking with the kernel keeping the timeout (no poll per call): a read
    the kernel gave up on must be a timeout, not the early end of an answer."""
    listener, url = _stalling_server(answer)
    client = Fetcher(attempts=1, allow_loopback=True, timeout_s=0.3)
    start = time.monotonic()
    try:
        with pytest.raises(TransientMediaError, match="TimeoutError: the server sent nothing"):
            client.get(url)
    finally:
        client.close()
        listener.close()
    assert time.monotonic() - start < 3
