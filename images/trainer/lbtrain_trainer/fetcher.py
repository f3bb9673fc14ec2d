"""Get media bytes by URL over pooled keep-alive connections, with retries.

Labelbox rows point at signed object-store URLs. ``requests.get`` per file opened a new session
and TCP (and TLS) connection for every file; a 16-thread export then ran at 0.21 of a plain
parallel download from the same server. One :class:`Fetcher` holds a ``urllib3`` pool per host
with as many connections as download threads, so N files over C threads open about C
connections, and urllib3 costs less Python per request than a ``requests.Session`` (measured on
loopback: ~2,900 against ~1,250 files/s at 16 threads, a bare ``http.client`` ~3,700).

What ``requests`` gave for free is kept: proxies from the environment (``HTTPS_PROXY``,
``NO_PROXY``...), the CA bundle of ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` (else certifi's),
redirects (Labelbox-hosted media redirect to signed URLs) and gzip decoding. A dropped keep-alive
connection is retried at once by urllib3; 5xx, 429 and network errors are retried with backoff
and end as :class:`TransientMediaError` (the stage fails and is retried); other 4xx are
:class:`BrokenMediaError` (the row is broken: retrying cannot help). ``data:`` and ``file://``
URLs are read locally.
"""

from __future__ import annotations

import base64
import os
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

TIMEOUT_S = 30.0
ATTEMPTS = 4
BACKOFF_S = 0.5
MAX_REDIRECTS = 5


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
    """Thread-safe: share one between the download threads (``concurrency`` of them)."""

    def __init__(
        self, concurrency: int, attempts: int | None = None, backoff_s: float | None = None
    ) -> None:
        import urllib3

        self.attempts = max(1, ATTEMPTS if attempts is None else attempts)
        self.backoff_s = BACKOFF_S if backoff_s is None else backoff_s
        self._pool_args: dict[str, Any] = {
            "num_pools": 32,
            "maxsize": max(1, concurrency),
            "block": True,  # never more than ``concurrency`` connections to one host
            "timeout": urllib3.Timeout(connect=TIMEOUT_S, read=TIMEOUT_S),
            "ca_certs": _ca_bundle(),
        }
        # Immediate retries for a keep-alive connection the server closed meanwhile; the
        # backoff retries of :meth:`get` handle the rest.
        self._retries = urllib3.Retry(
            total=2, connect=2, read=2, status=0, other=0, redirect=MAX_REDIRECTS
        )
        self._proxies = urllib.request.getproxies()
        self._managers: dict[str | None, Any] = {}
        self._routes: dict[tuple[str, str], str | None] = {}
        self._lock = threading.Lock()

    def _manager(self, url: str) -> Any:
        import urllib3

        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        with self._lock:
            if key not in self._routes:
                proxy = self._proxies.get(parts.scheme)
                bypass = not proxy or urllib.request.proxy_bypass(parts.hostname or "")
                self._routes[key] = None if bypass else proxy
            proxy_url = self._routes[key]
            manager = self._managers.get(proxy_url)
            if manager is None:
                manager = (
                    urllib3.PoolManager(**self._pool_args)
                    if proxy_url is None
                    else urllib3.ProxyManager(proxy_url, **self._pool_args)
                )
                self._managers[proxy_url] = manager
            return manager

    def get(self, url: str) -> bytes:
        """The body of ``url``; retries transient failures, BrokenMediaError for 4xx."""
        if url.startswith(("data:", "file://")):
            return read_local(url)
        import urllib3

        manager = self._manager(url)
        last: Exception | None = None
        for attempt in range(self.attempts):
            try:
                response = manager.urlopen("GET", url, retries=self._retries)
                error = classify_status(response.status)
                if error is None:
                    data: bytes = response.data
                    return data
                if error is BrokenMediaError:
                    raise BrokenMediaError(f"HTTP {response.status}")
                last = TransientMediaError(f"HTTP {response.status}")
            except urllib3.exceptions.HTTPError as exc:
                last = TransientMediaError(f"{type(exc).__name__}: {exc}")
            if attempt + 1 < self.attempts:
                time.sleep(self.backoff_s * 2**attempt)
        assert last is not None
        raise last

    def close(self) -> None:
        with self._lock:
            for manager in self._managers.values():
                manager.clear()
            self._managers.clear()
