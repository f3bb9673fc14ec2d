"""The client: JSON in and out, API errors as typed exceptions.

Request-and-answer verbs go over the keep-alive connections of `connections.py` (a create
through aiohttp's client cost more CPU than the whole rest of the webhook's request); watches,
long-lived streams, over one aiohttp session. JSON goes through orjson: encoding Job bodies and
decoding watch events were the operator's largest own CPU cost under a burst, and on a control
plane whose cores it shares that CPU is taken from the API server (bench/README.md).
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson

from lbtrain.kube.config import ConfigError, KubeConfig
from lbtrain.kube.connections import ConnectionPool, ProtocolError
from lbtrain.kube.errors import ApiError, ApiUnreachable, error_for
from lbtrain.kube.resources import Resource

PatchType = Literal["merge", "json", "strategic", "apply"]
_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}
FIELD_MANAGER = "lbtrain"


@functools.lru_cache(maxsize=256)
def _query(params: tuple[tuple[str, str], ...]) -> str:
    """The encoded query string; cached, since the same few (fieldManager=lbtrain above all)
    go with every write."""
    return urlencode(params)


@dataclass(frozen=True)
class WatchEvent:
    """One event of a watch stream: ADDED, MODIFIED, DELETED or BOOKMARK, and the object."""

    type: str
    object: dict[str, Any]


class KubeClient:
    """Typed verbs over the Kubernetes REST API. Use as an async context manager, or `close()`."""

    def __init__(self, config: KubeConfig, *, request_timeout: float = 30.0) -> None:
        self.config = config
        self._request_timeout = request_timeout
        url = urlsplit(config.server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"the API server address {config.server!r} is not an http(s) URL")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._prefix = url.path.rstrip("/")  # a server behind a path (Rancher, proxies)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._origin = f"{url.scheme}://{host}:{self._port}"
        self._fixed_headers = f"Host: {host}:{self._port}\r\nAccept: application/json\r\n"
        self._fixed_headers += "User-Agent: lbtrain\r\n"
        self._pool: ConnectionPool | None = None
        self._ssl: ssl.SSLContext | bool | None = None  # built once, for both kinds of request
        # Watches only. sock_connect, not connect: aiohttp's `connect` also counts the wait for
        # a pooled connection, which under a burst of requests is queueing, not an outage.
        self._timeout = aiohttp.ClientTimeout(total=request_timeout, sock_connect=5.0)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _ssl_context(self) -> ssl.SSLContext | bool:
        """The TLS context, built once (it loads the CA bundle and any client certificate)."""
        if self._ssl is None:
            self._ssl = self.config.ssl_context()
        return self._ssl

    def _connections(self) -> ConnectionPool:
        if self._pool is None:
            context = self._ssl_context()
            self._pool = ConnectionPool(
                self._host,
                self._port,
                ssl_context=context if isinstance(context, ssl.SSLContext) else None,
            )
        return self._pool

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl_context(), limit=64)
            self._session = aiohttp.ClientSession(
                base_url=self._origin, connector=connector, timeout=self._timeout
            )
        return self._session

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "lbtrain"}
        token = self.config.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        decode: bool = True,
    ) -> dict[str, Any]:
        """Send one request; answer the decoded JSON (with `decode=False`, an empty dict: the
        caller needs only success), or raise ApiError / ApiUnreachable."""
        data = b"" if body is None else orjson.dumps(body)
        target = self._prefix + path + (f"?{_query(tuple(params.items()))}" if params else "")
        head = f"{method} {target} HTTP/1.1\r\n{self._fixed_headers}"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
        elif method not in ("GET", "HEAD"):
            head += "Content-Length: 0\r\n"
        try:
            # Inside the try: a token file that cannot be read is an unreachable API too.
            token = self.config.bearer_token()
            if token:
                head += f"Authorization: Bearer {token}\r\n"
            async with asyncio.timeout(self._request_timeout):
                answer = await self._connections().exchange(method, head.encode() + b"\r\n" + data)
        except (OSError, TimeoutError, ProtocolError) as exc:
            raise ApiUnreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if not decode and answer.status < 400:
            return {}
        return self._decode(answer.status, answer.body)

    @staticmethod
    def _decode(status: int, raw: bytes) -> dict[str, Any]:
        try:
            doc = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:  # also what invalid UTF-8 raises
            doc = None
        if status >= 400:
            text = raw.decode("utf-8", errors="replace")
            raise error_for(status, doc if isinstance(doc, dict) else None, text)
        return doc if isinstance(doc, dict) else {}

    # --- verbs --------------------------------------------------------------------------------
    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        return await self.request("GET", res.path(namespace, name))

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> dict[str, Any]:
        params = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        return await self.request("GET", res.path(namespace), params=params)

    async def create(
        self,
        res: Resource,
        body: dict[str, Any],
        namespace: str | None = None,
        *,
        decode: bool = True,
    ) -> dict[str, Any]:
        """Create `body`; answer the stored object (`decode=False`: an empty dict, sparing the
        decoding of a large answer the caller does not read)."""
        body = {"apiVersion": res.api_version, "kind": res.kind, **body}
        return await self.request(
            "POST",
            res.path(namespace),
            body=body,
            params={"fieldManager": FIELD_MANAGER},
            decode=decode,
        )

    async def patch(
        self,
        res: Resource,
        name: str,
        body: Any,
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        patch_type: PatchType = "merge",
        force: bool = False,
        decode: bool = True,
    ) -> dict[str, Any]:
        """Patch `name`; answer the stored object (`decode=False`: an empty dict)."""
        path = res.path(namespace, name) + (f"/{subresource}" if subresource else "")
        params = {"fieldManager": FIELD_MANAGER}
        if force:
            params["force"] = "true"
        return await self.request(
            "PATCH",
            path,
            body=body,
            params=params,
            content_type=_PATCH_CONTENT_TYPES[patch_type],
            decode=decode,
        )

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation: str = "Background",
        grace_period_seconds: int | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"propagationPolicy": propagation}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        return await self.request("DELETE", res.path(namespace, name), body=body)

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        timeout_seconds: int = 300,
        label_selector: str | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Stream events until the server ends the watch; a 410 Gone raises ApiError(410)."""
        params = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if resource_version:
            params["resourceVersion"] = resource_version
        if label_selector:
            params["labelSelector"] = label_selector
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=5.0, sock_read=timeout_seconds + 30
        )
        try:
            async with self._http().get(
                self._prefix + res.path(namespace),
                params=params,
                headers=self._headers(),
                timeout=timeout,
            ) as resp:
                if resp.status >= 400:
                    self._decode(resp.status, await resp.read())
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = orjson.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise error_for(int(status.get("code") or 500), status, "")
                    yield WatchEvent(str(event.get("type")), dict(event.get("object") or {}))
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            raise ApiUnreachable(f"watch {res.plural}: {type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise ApiUnreachable(f"watch {res.plural}: read timed out") from exc

    async def wait_for(
        self,
        res: Resource,
        name: str,
        namespace: str | None,
        predicate: Any,
        *,
        timeout: float = 30.0,
        interval: float = 0.1,
    ) -> dict[str, Any]:
        """Poll until `predicate(obj)` holds; for tests and tooling, not for controllers."""
        deadline = asyncio.get_running_loop().time() + timeout
        last: dict[str, Any] | None = None
        while True:
            try:
                last = await self.get(res, name, namespace)
                if predicate(last):
                    return last
            except ApiError as exc:
                if exc.status != 404:
                    raise
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"{res.kind} {namespace}/{name} did not reach the expected state in "
                    f"{timeout}s; last seen: {json.dumps((last or {}).get('status'))[:800]}"
                )
            await asyncio.sleep(interval)
