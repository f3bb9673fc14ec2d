"""The least a server in front of the API server spends per create, for `webhook_bench.py --floors`.

Not products and not baselines that stand for one: lower bounds, to say how much of the webhook's
cost is its server framework, how much its own features, how much any Python server pays on this
machine, and how much merely standing between a client and the API server costs. Each runs on
uvloop (as `lbtrain webhook` does), in its own process.

- **relay**: a TCP relay in front of the API server. The load generator sends it api-direct's
  own requests (TLS from the generator to the API server, end to end); it forwards the bytes
  both ways unchanged, parsing nothing. Any server between a client and the API server does at
  least this: one more process to wake, read and write, each way.

The two webhook floors per request do only what a POST cannot leave out: find the body and the
signature header, check the HMAC, parse and check the body with the webhook's own
`parse_model_run`, build the same ModelRun with `build_model_run`, create it with lbtrain's
`KubeClient` (the same keep-alive connections to the API server), and answer 201 with the same
JSON.

- **bare**: one asyncio protocol and no HTTP framework at all; the least any Python server
  spends. Its parser handles exactly the requests the benchmark sends (Content-Length bodies,
  no pipelining); a bad request closes the connection.
- **aiohttp**: aiohttp's web framework (an `Application` with one route, no middleware, access
  log off, as `lbtrain webhook` runs it) around the same work; the least any webhook built on
  `aiohttp.web`, as lbtrain's is, can spend.

Left out of both, each of which the real webhook has: error answers in the webhook's JSON shape,
the 409/AlreadyExists path, metrics, the log line per request, the template cache check, the
in-flight count for graceful stops.
"""

from __future__ import annotations

import asyncio
import hmac
import re

import orjson
import uvloop
from aiohttp import web

from lbtrain.kube import MODELRUNS, KubeClient, load_config
from lbtrain_webhook.modelruns import build_model_run
from lbtrain_webhook.payload import parse_model_run
from lbtrain_webhook.signature import SIGNATURE_HEADER, sign

_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)")
_SIGNATURE = re.compile(rb"\r\nx-hub-signature: *(\S+)")


async def create(kube: KubeClient, namespace: str, body: bytes) -> bytes:
    """What every floor does once the signature is checked: the ModelRun, and the answer."""
    run = parse_model_run(body)
    obj = build_model_run(run)
    await kube.create(MODELRUNS, obj, namespace, decode=False)
    name = obj["metadata"]["name"]
    return orjson.dumps({"name": name, "namespace": namespace, "modelRunId": run.model_run_id})


# --- relay: bytes forwarded, nothing parsed -----------------------------------------------------
class _Upstream(asyncio.Protocol):
    """The relay's connection to the API server: what arrives goes back to the client."""

    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class Relay(asyncio.Protocol):
    """One client connection, relayed to its own connection to the API server."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # what the client sent before the upstream was open
        self.opening: asyncio.Task[None] | None = None  # referenced until done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.opening = asyncio.ensure_future(self._open())

    async def _open(self) -> None:
        client = self.client
        assert client is not None
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(
                lambda: _Upstream(client), self.host, self.port
            )
        except OSError:
            client.close()
            return
        self.upstream = upstream
        for data in self.pending:
            upstream.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.opening is not None:
            self.opening.cancel()  # a client gone before its upstream opened: do not open it
        if self.upstream is not None:
            self.upstream.close()


def serve_relay(port: int, upstream: str) -> None:
    """Relay 127.0.0.1:`port` to `upstream` ("host:port")."""
    host, upstream_port = upstream.rsplit(":", 1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Relay(host, int(upstream_port)), "127.0.0.1", port
        )
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# --- bare: no framework ---------------------------------------------------------------------------
class BareWebhook(asyncio.Protocol):
    def __init__(self, kube: KubeClient, namespace: str, secret: bytes) -> None:
        self.kube, self.namespace, self.secret = kube, namespace, secret
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.tasks: set[asyncio.Future[None]] = set()  # referenced until done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        length, signature = _LENGTH.search(head), _SIGNATURE.search(head)
        size = int(length.group(1)) if length else 0
        if len(self.buffer) < end + 4 + size:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + size])
        del self.buffer[: end + 4 + size]
        header = signature.group(1).decode() if signature else ""
        task = asyncio.ensure_future(self.handle(body, header))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def handle(self, body: bytes, header: str) -> None:
        assert self.transport is not None
        if not hmac.compare_digest(sign(self.secret, body), header):
            self.transport.close()
            return
        payload = await create(self.kube, self.namespace, body)
        self.transport.write(
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
        )


def serve_bare(port: int, kubeconfig: str, namespace: str, secret: str) -> None:
    async def main() -> None:
        async with KubeClient(load_config(kubeconfig)) as kube:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(
                lambda: BareWebhook(kube, namespace, secret.encode()), "127.0.0.1", port
            )
            async with server:
                await server.serve_forever()

    uvloop.run(main())


# --- aiohttp: the web framework lbtrain's webhook is built on, and nothing else ------------------
KUBE = web.AppKey("kube", KubeClient)


def aiohttp_floor_app(kube: KubeClient, namespace: str, secret: str) -> web.Application:
    key = secret.encode()

    async def post_model_run(request: web.Request) -> web.Response:
        body = await request.read()
        if not hmac.compare_digest(sign(key, body), request.headers.get(SIGNATURE_HEADER, "")):
            raise web.HTTPUnauthorized()
        payload = await create(request.app[KUBE], namespace, body)
        return web.Response(body=payload, status=201, content_type="application/json")

    app = web.Application()
    app[KUBE] = kube
    app.router.add_post("/model_run", post_model_run)
    return app


def serve_aiohttp(port: int, kubeconfig: str, namespace: str, secret: str) -> None:
    async def main() -> None:
        async with KubeClient(load_config(kubeconfig)) as kube:
            runner = web.AppRunner(aiohttp_floor_app(kube, namespace, secret), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                await asyncio.Event().wait()
            finally:
                await runner.cleanup()

    uvloop.run(main())
