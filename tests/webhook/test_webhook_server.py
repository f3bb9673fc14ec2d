"""The webhook as `lbtrain webhook` runs it: real sockets, TLS, metrics port, graceful stop."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import socket
import ssl
import sys

import aiohttp
import pytest

from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed.pki import write_pki
from lbtrain_webhook.server import Server
from lbtrain_webhook.signature import sign

from .helpers import SECRET, run_body

pytestmark = pytest.mark.testbed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_graceful_stop_finishes_the_request_in_flight(webhook_settings):
    settings = dataclasses.replace(
        webhook_settings, host="127.0.0.1", port=0, metrics_port=free_port()
    )
    server = Server(settings)
    await server.start()
    await server.wait_ready(15)
    body = run_body(fake_cuid("graceful-run"), "ner")
    head = (
        "POST /model_run HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Hub-Signature: {sign(SECRET.encode(), body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head.encode() + body[:10])  # the handler starts, waiting for the rest
    await writer.drain()
    await asyncio.sleep(0.3)
    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.3)
    with pytest.raises(OSError):  # no new connections once stopping
        await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(body[10:])
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await stopping
    assert reply.startswith(b"HTTP/1.1 201"), reply[:200]


async def test_tls_and_metrics_port(webhook_settings, tmp_path):
    write_pki(tmp_path / "pki")
    settings = dataclasses.replace(
        webhook_settings,
        host="127.0.0.1",
        port=0,
        metrics_port=free_port(),
        tls_cert=tmp_path / "pki" / "apiserver.crt",
        tls_key=tmp_path / "pki" / "apiserver.key",
    )
    server = Server(settings)
    await server.start()
    try:
        await server.wait_ready(15)
        ctx = ssl.create_default_context(cafile=str(tmp_path / "pki" / "ca.crt"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
            url = f"https://127.0.0.1:{server.port}/models"
            async with http.get(
                url, headers={"X-Hub-Signature": sign(SECRET.encode(), b"")}
            ) as resp:
                assert resp.status == 200
                assert "ner" in await resp.json()
            async with http.get(f"http://127.0.0.1:{server.metrics_port}/metrics") as resp:
                assert resp.status == 200
                assert "lbtrain_webhook_requests_total{" in await resp.text()
    finally:
        await server.stop()


async def test_cli_serves_and_stops_cleanly_on_sigterm(control_plane, seeded, secret_file):
    port, metrics_port = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lbtrain",
        "webhook",
        f"--namespace={seeded}",
        f"--kubeconfig={control_plane.kubeconfig}",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--metrics-port={metrics_port}",
        f"--secret-file={secret_file}",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            headers = {"X-Hub-Signature": sign(SECRET.encode(), b"")}
            async with http.get(f"http://127.0.0.1:{port}/models", headers=headers) as resp:
                assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert proc.stderr is not None
    stderr = (await proc.stderr.read()).decode()
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    messages = [line["message"] for line in lines]
    assert "webhook listening" in messages
    listening = lines[messages.index("webhook listening")]
    assert listening["event_loop"] == "uvloop", listening  # the command line runs on uvloop
    assert "shutting down; finishing in-flight requests" in messages
    assert SECRET not in stderr
    assert "Traceback" not in stderr
