"""A keep-alive HTTP/1.1 media server on loopback, for the export tests and its benchmark.

Labelbox rows point at media in object stores (signed URLs) that keep connections alive. The
fake Labelbox serves media too, but from aiohttp on the test's event loop; this one is a plain
threaded ``http.server`` (one thread per connection, HTTP/1.1 with ``Content-Length``), so it
behaves like a real keep-alive server, can be started in its own process for the benchmark, and
counts what a client did to it: connections accepted and requests served. It can also fail a
path a given number of times (503 or any status) to exercise retries, redirect a path, close
idle keep-alive connections after ``idle_timeout`` seconds (as object stores do), and act as a
forward proxy: a request in absolute form (``GET http://host/path``) is answered from ``path``,
and ``CONNECT host:port`` opens a tunnel to that address (loopback only), both counted in
``proxied`` with their ``Proxy-Authorization`` kept. With ``tls`` (a server-side
``ssl.SSLContext``) it speaks HTTPS. Two switches make it behave like the plain servers users
run: ``http10`` answers in HTTP/1.0 and closes every connection after one response, and
``nagle=True`` leaves Nagle's algorithm on (headers and body are two writes, so the body waits
for the client's ACK of the headers: a client that delays its ACK pays 40 ms per file).

Run ``python -m lbtrain_dev.media_server --png N --jpeg N [--http10] [--nagle]`` to serve
synthetic images at ``/png/<i>.png`` and ``/jpeg/<i>.jpg`` (``N`` distinct images each, reused
for any ``i``); it prints its base URL on the first line of stdout and serves until stdin
closes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import selectors
import socket
import ssl
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Resolver = Callable[[str], tuple[bytes, str] | None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # socketserver's default of 5 drops bursts of new connections

    def __init__(self, address: tuple[str, int], media: MediaServer) -> None:
        self.media = media
        super().__init__(address, _Handler)
        if media.tls is not None:
            self.socket = media.tls.wrap_socket(self.socket, server_side=True)

    def get_request(self) -> tuple[Any, Any]:
        request = super().get_request()
        with self.media.lock:
            self.media.connections += 1
        return request


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY the body waits for the
    # client's delayed ACK (40 ms) on every keep-alive request, as no real server makes it.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        media = self.server.media
        if media.nagle:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        if media.http10:  # read by parse_request: the connection closes after one answer
            self.protocol_version = "HTTP/1.0"
        if self.server.media.idle_timeout is not None:  # the read of the next request times out
            self.connection.settimeout(self.server.media.idle_timeout)

    def do_CONNECT(self) -> None:
        media = self.server.media
        host, _, port = self.path.rpartition(":")
        with media.lock:
            media.proxied += 1
            media.proxy_authorization = self.headers.get("Proxy-Authorization")
        if host not in ("127.0.0.1", "localhost"):  # a test tunnel never leaves the machine
            self.send_error(403, "tunnels only to loopback")
            return
        with socket.create_connection((host, int(port)), timeout=10) as upstream:
            self.send_response(200, "Connection established")
            self.end_headers()
            self.wfile.flush()
            _relay(self.connection, upstream)
        self.close_connection = True

    def do_GET(self) -> None:
        media = self.server.media
        path = self.path.split("?", 1)[0]
        with media.lock:
            media.requests += 1
            if path.startswith(("http://", "https://")):  # absolute form: we are the proxy
                media.proxied += 1
                media.proxy_authorization = self.headers.get("Proxy-Authorization")
                path = urllib.parse.urlsplit(path).path
            redirect = media.redirects.get(path)
            failures = media.failures.get(path)
            if failures:
                status, left = failures
                if left > 0:
                    media.failures[path] = (status, left - 1)
                    fail: int | None = status
                else:
                    fail = None
            else:
                fail = None
        found = None if fail or redirect else media.resolve(path)
        if redirect and not fail:
            body = b""
            self.send_response(redirect[0])
            self.send_header("Location", redirect[1])
        elif fail or found is None:
            body = b"failed" if fail else b"not found"
            self.send_response(fail or 404)
            self.send_header("Content-Type", "text/plain")
        else:
            body, content_type = found
            self.send_response(200)
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    with selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        while True:
            for key, _ in selector.select(timeout=10):
                source = key.fileobj
                assert isinstance(source, socket.socket)
                data = source.recv(65536)
                if not data:
                    return
                key.data.sendall(data)


class MediaServer:
    """Serve ``files`` (path -> (bytes, content type)) and whatever ``resolver`` answers."""

    def __init__(
        self,
        files: dict[str, tuple[bytes, str]] | None = None,
        resolver: Resolver | None = None,
        idle_timeout: float | None = None,
        tls: ssl.SSLContext | None = None,
        *,
        http10: bool = False,
        nagle: bool = False,
    ) -> None:
        self.http10 = http10  # answer HTTP/1.0 and close each connection after one response
        self.nagle = nagle  # leave Nagle's algorithm on, as http.server does by default
        self.files = dict(files or {})
        self.resolver = resolver
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = 0
        self.failures: dict[str, tuple[int, int]] = {}  # path -> (status, times left)
        self.redirects: dict[str, tuple[int, str]] = {}  # path -> (status, Location)
        self.idle_timeout = idle_timeout  # close a keep-alive connection idle this long
        self.proxied = 0  # requests that came in absolute form, as to a proxy
        self.proxy_authorization: str | None = None  # the last proxied request's
        self.tls: ssl.SSLContext | None = tls
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def resolve(self, path: str) -> tuple[bytes, str] | None:
        found = self.files.get(path)
        if found is None and self.resolver is not None:
            found = self.resolver(path)
        return found

    def add(self, path: str, data: bytes, content_type: str) -> str:
        self.files["/" + path.lstrip("/")] = (data, content_type)
        return self.url(path)

    def fail(self, path: str, times: int, status: int = 503) -> None:
        """Answer ``status`` to the next ``times`` requests for ``path``."""
        with self.lock:
            self.failures["/" + path.lstrip("/")] = (status, times)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer requests for ``path`` with a redirect to ``location``; returns its URL."""
        with self.lock:
            self.redirects["/" + path.lstrip("/")] = (status, location)
        return self.url(path)

    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host!s}:{port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> MediaServer:
        self._server = _Server((host, port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="media-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @classmethod
    @contextlib.contextmanager
    def running(
        cls, host: str = "127.0.0.1", port: int = 0, **kwargs: Any
    ) -> Iterator[MediaServer]:
        server = cls(**kwargs).start(host, port)
        try:
            yield server
        finally:
            server.stop()


def synthetic_png(index: int, width: int = 320, height: int = 240) -> bytes:
    """A small PNG with some structure (a gradient, a block, light noise), one per ``index``."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(index)
    gradient = np.asarray(Image.linear_gradient("L").resize((width, height)), dtype=np.int16)
    noise = rng.integers(-6, 7, size=(height, width, 3), dtype=np.int16)
    pixels = np.clip(gradient[..., None] + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    x = (index * 37) % max(1, width - 40)
    draw.rectangle((x, 20, x + 40, 80), fill=((index * 53) % 256, 90, 200))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_jpeg(index: int, width: int = 4000, height: int = 3000, quality: int = 90) -> bytes:
    """A photo-sized JPEG with texture (noise over gradients), different per ``index``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(index)
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    base = np.stack([ys + 0 * xs, xs + 0 * ys, (xs + ys) / 2], axis=-1)
    noise = rng.normal(0, 12, size=(height // 4, width // 4, 3)).astype(np.float32)
    noise = noise.repeat(4, axis=0).repeat(4, axis=1)
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", type=int, default=16, help="distinct small PNGs")
    parser.add_argument("--jpeg", type=int, default=0, help="distinct 4000x3000 JPEGs")
    parser.add_argument("--png-width", type=int, default=320, help="PNG width (height: 3/4)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--http10", action="store_true", help="HTTP/1.0: close after each file")
    parser.add_argument("--nagle", action="store_true", help="leave Nagle's algorithm on")
    args = parser.parse_args(argv)
    pngs = [synthetic_png(i, args.png_width, args.png_width * 3 // 4) for i in range(args.png)]
    jpegs = [synthetic_jpeg(i) for i in range(args.jpeg)]

    def resolve(path: str) -> tuple[bytes, str] | None:
        kind, _, name = path.strip("/").partition("/")
        stem = name.split(".", 1)[0]
        if not stem.isdigit():
            return None
        if kind == "png" and pngs:
            return pngs[int(stem) % len(pngs)], "image/png"
        if kind == "jpeg" and jpegs:
            return jpegs[int(stem) % len(jpegs)], "image/jpeg"
        return None

    with MediaServer.running(
        resolver=resolve, port=args.port, http10=args.http10, nagle=args.nagle
    ) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin
        print(f"connections={server.connections} requests={server.requests}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
