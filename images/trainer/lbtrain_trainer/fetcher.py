"""Get media bytes by URL over keep-alive connections, one per download thread, with retries.

Labelbox rows point at signed object-store URLs. ``requests.get`` per file opened a new session
and TCP (and TLS) connection for every file; a 16-thread export then ran at 0.21 of a plain
parallel download from the same server. Each download thread now keeps one ``http.client``
connection per origin and reuses it for every file it fetches, so N files over C threads open
about C connections to a host. Why ``http.client`` and not a pool library: on small CPUs the
export is CPU-bound on the Python each request costs, and a urllib3 pool shared by 16 threads
cost about twice a bare connection per thread (measured on loopback, 2 cores: 1,170 against
1,530 files/s for the whole media step, and the bare fetch twice as fast again; see
``bench/README.md``, "export"; the responses' headers are read by
:mod:`lbtrain_trainer.http_response`, 13% more). Nothing is shared between the threads but the
route table.

What ``requests`` gave for free is kept:

- proxies from the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``): plain HTTP is
  sent to the proxy with the absolute URL, HTTPS goes through a ``CONNECT`` tunnel, and a
  ``user:password@`` in the proxy URL becomes ``Proxy-Authorization``;
- TLS verified against ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` (else certifi's bundle, else
  the system's);
- redirects (Labelbox-hosted media redirect to signed URLs), at most :data:`MAX_REDIRECTS`;
- gzip and deflate bodies are decoded.

Nagle: a server that writes an answer's headers and body in two sends without ``TCP_NODELAY``
(Python's ``http.server`` by default, some proxies) holds the body until the client has
acknowledged the headers. On a keep-alive connection Linux treats the exchange as interactive
and delays that ACK by 40 ms, so every file cost ~44 ms per thread (362 files/s at 16 threads
against 873 for ``urllib``, whose ``Connection: close`` gives each file a fresh connection,
which ACKs at once). The request goes out in one send (``http.client`` joins the request line
and headers, and sets ``TCP_NODELAY`` on our side); after it, :func:`quick_ack` sets
``TCP_QUICKACK``, so the headers are acknowledged as they are read and the body follows at once
(the same server: 330 against 4,600 files/s, 3 kB bodies, 16 threads on loopback).

Errors: a keep-alive connection the server closed meanwhile is reopened at once; 5xx, 429 and
network errors are retried with backoff and end as :class:`TransientMediaError` (the stage fails
and is retried); other 4xx and redirect loops are :class:`BrokenMediaError` (the row is broken:
retrying cannot help). ``data:`` and ``file://`` URLs are read locally.
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from lbtrain_trainer.http_response import LeanHTTPConnection, LeanHTTPSConnection

TIMEOUT_S = 30.0
ATTEMPTS = 4
BACKOFF_S = 0.5
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "lbtrain-trainer"
# A reused connection the server had closed fails on its next request with one of these before
# any answer came: the request never reached the server, so it is sent again on a new one.
STALE_CONNECTION = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    BrokenPipeError,
    ConnectionResetError,
)


def quick_ack(sock: socket.socket | None) -> None:
    """Have the kernel acknowledge the answer's first segment at once (Linux ``TCP_QUICKACK``;
    elsewhere nothing): see the module docstring, "Nagle"."""
    if sock is not None and hasattr(socket, "TCP_QUICKACK"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


class TransientMediaError(Exception):
    """The media server failed in a way that may go away (5xx, 429, network errors)."""


class BrokenMediaError(Exception):
    """The media cannot be used (4xx, undecodable image, not UTF-8 text)."""


def classify_status(status: int) -> type[Exception] | None:
    """None for a usable answer, else the error class an HTTP status means for a media row."""
    if status < 400:
        return None
    if status == 429 or status >= 500:
        return TransientMediaError
    return BrokenMediaError


def read_local(url: str) -> bytes:
    """The bytes of a ``data:`` or ``file://`` URL."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if header.endswith(";base64"):
            return base64.b64decode(payload)
        return urllib.parse.unquote_to_bytes(payload)
    try:
        return Path(urllib.parse.urlparse(url).path).read_bytes()
    except OSError as exc:
        raise BrokenMediaError(str(exc)) from exc


def decode_body(data: bytes, content_encoding: str | None) -> bytes:
    """The body as the file it is: gzip and deflate undone, anything else as it came."""
    encoding = (content_encoding or "").strip().lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(data, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            try:
                return zlib.decompress(data)
            except zlib.error:  # raw deflate, as some servers send it
                return zlib.decompress(data, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise BrokenMediaError(f"body does not decode as {encoding}: {exc}") from exc
    return data


@dataclass(frozen=True)
class Route:
    """How to reach one origin: straight, or through a proxy (host, port, auth header)."""

    scheme: str
    host: str
    port: int
    proxy: tuple[str, int, str | None] | None = None

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def plan_route(url: str, proxies: dict[str, str]) -> Route:
    """The route to ``url``'s origin given ``proxies`` (as ``urllib.request.getproxies()``
    returns them); ``NO_PROXY`` is honoured through ``urllib.request.proxy_bypass``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BrokenMediaError(f"not an http(s) URL: {url[:100]!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxy_url = proxies.get(parts.scheme)
    if not proxy_url or urllib.request.proxy_bypass(parts.hostname):
        return Route(parts.scheme, parts.hostname, port)
    if "://" not in proxy_url:
        proxy_url = "http://" + proxy_url
    proxy = urllib.parse.urlsplit(proxy_url)
    auth = None
    if proxy.username is not None:
        user = urllib.parse.unquote(proxy.username)
        password = urllib.parse.unquote(proxy.password or "")
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    proxy_port = proxy.port or (443 if proxy.scheme == "https" else 80)
    return Route(parts.scheme, parts.hostname, port, (proxy.hostname or "", proxy_port, auth))


def _ca_bundle() -> str | None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        import certifi

        return str(certifi.where())
    except ImportError:  # pragma: no cover - certifi comes with requests
        return None


class Fetcher:
    """Thread-safe: share one between the download threads; each thread keeps its own
    connections (one per origin it fetches from), so the threads never wait on each other."""

    def __init__(self, attempts: int | None = None, backoff_s: float | None = None) -> None:
        self.attempts = max(1, ATTEMPTS if attempts is None else attempts)
        self.backoff_s = BACKOFF_S if backoff_s is None else backoff_s
        self._proxies = urllib.request.getproxies()
        self._routes: dict[str, Route] = {}
        self._tls: ssl.SSLContext | None = None
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def get(self, url: str) -> bytes:
        """The body of ``url``; retries transient failures, BrokenMediaError for 4xx."""
        if url.startswith(("data:", "file://")):
            return read_local(url)
        last: Exception | None = None
        for attempt in range(self.attempts):
            try:
                return self._follow(url)
            except TransientMediaError as exc:
                last = exc
            if attempt + 1 < self.attempts:
                time.sleep(self.backoff_s * 2**attempt)
        assert last is not None
        raise last

    def _follow(self, url: str) -> bytes:
        """One attempt: the request, and the redirects it leads to."""
        for _ in range(MAX_REDIRECTS + 1):
            status, location, body = self._request(url)
            if location is None:
                error = classify_status(status)
                if error is None:
                    return body
                raise error(f"HTTP {status}")
            url = urllib.parse.urljoin(url, location)
        raise BrokenMediaError(f"more than {MAX_REDIRECTS} redirects")

    def _request(self, url: str) -> tuple[int, str | None, bytes]:
        """(status, redirect target or None, decoded body) of one GET."""
        parts = urllib.parse.urlsplit(url)
        route = self._route(parts, url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        if route.proxy and route.scheme == "http":
            target = urllib.parse.urlunsplit((parts.scheme, parts.netloc, target, "", ""))
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"}
        if route.proxy and route.proxy[2] and route.scheme == "http":
            headers["Proxy-Authorization"] = route.proxy[2]
        for fresh in (False, True):
            conn, reused = self._connection(route, fresh)
            try:
                conn.request("GET", target, headers=headers)
                quick_ack(conn.sock)
                response = conn.getresponse()
                body = response.read()
            except STALE_CONNECTION as exc:
                self._discard(route, conn)
                if reused:
                    continue  # the server closed it while idle: once more on a new one
                raise TransientMediaError(f"{type(exc).__name__}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._discard(route, conn)
                raise TransientMediaError(f"{type(exc).__name__}: {exc}") from exc
            if response.will_close:
                self._discard(route, conn)
            location = response.getheader("Location")
            if response.status in REDIRECTS and location:
                return response.status, location, b""
            encoding = response.getheader("Content-Encoding")
            return response.status, None, decode_body(body, encoding)
        raise AssertionError("unreachable")

    def _route(self, parts: urllib.parse.SplitResult, url: str) -> Route:
        key = f"{parts.scheme}://{parts.netloc}"
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = plan_route(url, self._proxies)
        return route

    def _connection(self, route: Route, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection for ``route`` (a new one if ``fresh``), and whether it was
        used before."""
        conns: dict[Route, http.client.HTTPConnection] = self._local.__dict__.setdefault(
            "conns", {}
        )
        conn = None if fresh else conns.get(route)
        if conn is not None:
            return conn, True
        conn = self._connect(route)
        conns[route] = conn
        with self._lock:
            self._open.add(conn)
        return conn, False

    def _connect(self, route: Route) -> http.client.HTTPConnection:
        host, port = (route.proxy[0], route.proxy[1]) if route.proxy else (route.host, route.port)
        if route.scheme == "http":
            return LeanHTTPConnection(host, port, timeout=TIMEOUT_S)
        conn = LeanHTTPSConnection(host, port, timeout=TIMEOUT_S, context=self._context())
        if route.proxy:
            auth = route.proxy[2]
            conn.set_tunnel(
                route.host, route.port, headers={"Proxy-Authorization": auth} if auth else None
            )
        return conn

    def _context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                self._tls = ssl.create_default_context(cafile=_ca_bundle())
            return self._tls

    def _discard(self, route: Route, conn: http.client.HTTPConnection) -> None:
        conn.close()
        conns = self._local.__dict__.get("conns", {})
        if conns.get(route) is conn:
            del conns[route]
        with self._lock:
            self._open.discard(conn)

    def close(self) -> None:
        """Close every thread's connections (call when the threads are done)."""
        with self._lock:
            for conn in self._open:
                conn.close()
            self._open.clear()
