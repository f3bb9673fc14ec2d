"""The Kubernetes API going away: 503 and nothing created; back again: ready and creating."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
from urllib.parse import urlsplit

import pytest
import yaml

from lbtrain.kube import MODELRUNS, KubeClient, NotFound, load_config
from lbtrain_dev.ids import fake_cuid
from lbtrain_webhook.app import CACHE
from lbtrain_webhook.signature import sign

from .helpers import SECRET, run_body, signed_headers

pytestmark = pytest.mark.testbed


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proxy:
    """A TCP proxy to the API server that the test can cut and restore."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host, self.target_port = parts.hostname or "127.0.0.1", parts.port or 443
        self.port = closed_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


async def test_api_unreachable_from_the_start_is_503(
    make_client, webhook_settings, control_plane, tmp_path
):
    doc = yaml.safe_load(control_plane.kubeconfig.read_text())
    for cluster in doc["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{closed_port()}"
    kubeconfig = tmp_path / "closed.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(doc))
    settings = dataclasses.replace(webhook_settings, kubeconfig=str(kubeconfig))
    client = await make_client(settings, wait=False)
    body = run_body(fake_cuid("unreachable-run"), "ner")
    resp = await client.post("/model_run", data=body, headers=signed_headers(body))
    assert resp.status == 503
    doc = await resp.json()
    assert doc["error"] == "unavailable"
    assert SECRET not in json.dumps(doc)
    resp = await client.get("/models", headers={"X-Hub-Signature": sign(SECRET.encode(), b"")})
    assert resp.status == 503
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/healthz")).status == 200


async def test_api_lost_after_sync_then_back(
    make_client, webhook_settings, control_plane, kube: KubeClient
):
    proxy = Proxy(control_plane.server)
    await proxy.start()
    config = dataclasses.replace(
        load_config(str(control_plane.kubeconfig)), server=f"https://127.0.0.1:{proxy.port}"
    )
    async with KubeClient(config, request_timeout=5) as proxied:
        client = await make_client(webhook_settings, kube=proxied)
        assert (await client.get("/readyz")).status == 200

        await proxy.stop()
        body = run_body(fake_cuid("outage-run"), "ner")
        resp = await client.post("/model_run", data=body, headers=signed_headers(body))
        assert resp.status == 503
        assert (await resp.json())["error"] == "unavailable"
        with pytest.raises(NotFound):
            await kube.get(MODELRUNS, "outage-run", webhook_settings.namespace)
        for _ in range(100):
            if (await client.get("/readyz")).status == 503:
                break
            await asyncio.sleep(0.05)
        assert (await client.get("/readyz")).status == 503
        # the last known model types are still served while the API is away
        resp = await client.get("/models", headers={"X-Hub-Signature": sign(SECRET.encode(), b"")})
        assert resp.status == 200
        assert "ner" in await resp.json()

        await proxy.start()
        for _ in range(200):
            if (await client.get("/readyz")).status == 200:
                break
            await asyncio.sleep(0.05)
        assert client.app[CACHE].ready
        resp = await client.post("/model_run", data=body, headers=signed_headers(body))
        assert resp.status == 201
        await proxy.stop()
