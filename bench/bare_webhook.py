"""The least a Python webhook must spend per `POST /model_run`, for `webhook_bench.py --bare`.

Not a product and not a baseline that stands for one: a lower bound, to say how much of the
webhook's own cost is its server framework and its features, and how much any Python server on
this machine pays. One bare asyncio protocol on uvloop (as `lbtrain webhook` runs), in its own
process, that per request does only what cannot be left out: find the body and the signature
header, check the HMAC, parse and check the body with the webhook's own `parse_model_run`,
build the same ModelRun with `build_model_run`, create it with lbtrain's `KubeClient` (the same
keep-alive connections to the API server), and answer 201 with the same JSON.

Left out, each of which the real webhook has: routing, a general HTTP parser (this one handles
exactly the requests the benchmark sends: Content-Length bodies, no pipelining), error answers
(a bad request closes the connection), the 409/AlreadyExists path, metrics, the log line per
request, the template cache check, in-flight counting for graceful stops.
"""

from __future__ import annotations

import asyncio
import hmac
import re

import orjson
import uvloop

from lbtrain.kube import MODELRUNS, KubeClient, load_config
from lbtrain_webhook.modelruns import build_model_run
from lbtrain_webhook.payload import parse_model_run
from lbtrain_webhook.signature import sign

_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)")
_SIGNATURE = re.compile(rb"\r\nx-hub-signature: *(\S+)")


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
        run = parse_model_run(body)
        obj = build_model_run(run)
        await self.kube.create(MODELRUNS, obj, self.namespace, decode=False)
        name = obj["metadata"]["name"]
        answer = {"name": name, "namespace": self.namespace, "modelRunId": run.model_run_id}
        payload = orjson.dumps(answer)
        self.transport.write(
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
        )


def serve(port: int, kubeconfig: str, namespace: str, secret: str) -> None:
    async def main() -> None:
        async with KubeClient(load_config(kubeconfig)) as kube:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(
                lambda: BareWebhook(kube, namespace, secret.encode()), "127.0.0.1", port
            )
            async with server:
                await server.serve_forever()

    uvloop.run(main())
