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
and delays that ACK by 40 ms, so every small file cost ~44 ms per thread (the export step: 340
files/s at 16 threads against ~1,000 for ``urllib``, whose ``Connection: close`` gives each file
a fresh connection, which ACKs at once; 3.6 kB PNGs on loopback). The request goes out in one
send (``http.client`` joins the request line and headers, and sets ``TCP_NODELAY`` on our
side); after it, :func:`quick_ack` sets ``TCP_QUICKACK``, so the headers are acknowledged as
they are read and the body follows at once (the same export step: 1,200-1,600 files/s, 1.2-1.6
times ``urllib``; ``Fetcher.get`` alone against 3 kB bodies: 330 before, 4,600 after).

Errors: a keep-alive connection the server closed meanwhile is reopened at once; 5xx, 429 and
network errors are retried with backoff and end as :class:`TransientMediaError` (the stage fails
and is retried); other 4xx and redirect loops are :class:`BrokenMediaError` (the row is broken:
retrying cannot help). ``data:`` URLs are read locally.

What is refused (a :class:`BrokenMediaError` that names the host and address): row data is
written by any Labelbox user who can create data rows, and what the trainer fetches ends up in
its artifacts (a small text model's vocabulary), so the trainer must not become a way to read
what only the cluster can reach. ``file://`` URLs are refused (:mod:`lbtrain_trainer.media`;
they would read the trainer's own disk, and Labelbox never exports them), and so is any host
that resolves to a loopback, link-local (169.254.0.0/16, fe80::/10, where cloud metadata
services live) or other known metadata address. The check runs on the address actually connected
to, before any request is sent (a literal address before connecting at all), so a name that
resolves differently the second time gains nothing; redirects are requests like any other.
Private networks (10/8 ...) stay allowed: in-cluster object stores live there. Through a proxy
only the target's name is checked (the proxy's own address is the operator's choice).
``allow_loopback`` (``LBTRAIN_ALLOW_LOOPBACK_MEDIA``) allows loopback, for test servers on
127.0.0.1; link-local and metadata addresses are never fetched.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass

from lbtrain.contract import ENV_ALLOW_LOOPBACK_MEDIA
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


# Cloud metadata services outside the link-local range (AWS IPv6, Alibaba), and "this host".
METADATA_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("fd00:ec2::254/128", "100.100.100.200/32", "0.0.0.0/8")
)


def refused_address(ip: str, allow_loopback: bool = False) -> str | None:
    """Why the trainer does not fetch media from ``ip`` (a loopback, unless allowed,
    link-local or metadata address), or None when it may."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None  # not an IP address (a Unix socket path): nothing to judge
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback:
        return None if allow_loopback else "a loopback address"
    if addr.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if addr.is_unspecified or any(addr in net for net in METADATA_NETWORKS):
        return "a cloud metadata or unspecified address"
    return None


def redact_url(url: str, limit: int = 160) -> str:
    """``url`` for a log or an error: no query (signatures), no user info, at most ``limit``
    characters; a ``data:`` URL is shortened to its header."""
    if url.startswith("data:"):
        return url.partition(",")[0][:60] + ",…"
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url[:limit]
    if not parts.scheme:
        return url[:limit]
    shown = f"{parts.scheme}://{host}{port}{parts.path}"
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


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


def read_data_url(url: str) -> bytes:
    """The bytes of a ``data:`` URL."""
    header, _, payload = url.partition(",")
    try:
        if header.endswith(";base64"):
            return base64.b64decode(payload)
    except ValueError as exc:
        raise BrokenMediaError(f"data: URL is not valid base64: {exc}") from exc
    return urllib.parse.unquote_to_bytes(payload)


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


def status_message(status: int) -> str:
    """An HTTP error status as a media row's error; 401 and 403 say what they mean here."""
    if status in (401, 403):
        return (
            f"HTTP {status}: access denied (a private bucket's URL that is not signed, or whose "
            "signature expired; the trainer sends no credentials)"
        )
    return f"HTTP {status}"


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


def _resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to here ([] if it does not: the proxy may know it)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return [str(info[4][0]) for info in infos]


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

    def __init__(
        self,
        attempts: int | None = None,
        backoff_s: float | None = None,
        *,
        allow_loopback: bool = False,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.allow_loopback = allow_loopback  # fetch from 127.0.0.1 too (test servers)
        self.timeout_s = timeout_s  # to connect, and for each read
        self.attempts = max(1, ATTEMPTS if attempts is None else attempts)
        self.backoff_s = BACKOFF_S if backoff_s is None else backoff_s
        self._proxies = urllib.request.getproxies()
        self._routes: dict[str, Route] = {}
        self._tls: ssl.SSLContext | None = None
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def get(self, url: str) -> bytes:
        """The body of ``url``; retries transient failures, BrokenMediaError for 4xx and for
        a refused URL or address."""
        if url.startswith("data:"):
            return read_data_url(url)
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
                raise error(status_message(status))
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
                if not reused:
                    self._connect_checked(route, conn)
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

    def _connect_checked(self, route: Route, conn: http.client.HTTPConnection) -> None:
        """Connect ``conn``, refusing (closed, :class:`BrokenMediaError`) a host that is, or
        resolves to, an address the trainer does not fetch from (module docstring)."""
        # A literal address is judged before any packet goes there; a name, on the address it
        # connected to (one lookup per connection, as before). Through a proxy, the name's
        # addresses here.
        for ip in _resolve(route.host, route.port) if route.proxy else [route.host]:
            self._refuse(route, conn, ip)
        conn.connect()
        if not route.proxy and conn.sock is not None:
            self._refuse(route, conn, str(conn.sock.getpeername()[0]))

    def _refuse(self, route: Route, conn: http.client.HTTPConnection, ip: str) -> None:
        why = refused_address(ip, self.allow_loopback)
        if why is not None:
            self._discard(route, conn)
            hint = (
                f"; set {ENV_ALLOW_LOOPBACK_MEDIA}=true to allow loopback (a test server)"
                if "loopback" in why
                else ""
            )
            raise BrokenMediaError(f"refused: {route.host} is {ip}, {why}{hint}")

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
            return LeanHTTPConnection(host, port, timeout=self.timeout_s)
        conn = LeanHTTPSConnection(host, port, timeout=self.timeout_s, context=self._context())
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
