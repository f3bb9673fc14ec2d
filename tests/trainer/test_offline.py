"""The trainer tests run offline: only loopback is reachable, in-process and in subprocesses.

The fixture ``offline`` (conftest) is autouse; these tests check that it is in force, that it
still lets the fake Labelbox on 127.0.0.1 through, and that a subprocess (as the stage tests
start them) inherits it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.trainer.offline import sitecustomize as network_guard

# TEST-NET-1 (RFC 5737): documentation addresses, never routed.
REMOTE = ("192.0.2.1", 443)


def test_hub_is_offline_and_proxies_point_at_a_closed_local_port(offline):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert os.environ[name] == offline
    assert os.environ["NO_PROXY"] == "127.0.0.1,localhost"
    host, port = offline.removeprefix("http://").split(":")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=2).close()


def test_non_loopback_connections_and_lookups_fail_in_process():
    assert network_guard.installed()
    with pytest.raises(network_guard.NetworkAccessBlocked):
        socket.create_connection(REMOTE, timeout=2)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        pytest.raises(network_guard.NetworkAccessBlocked),
    ):
        udp.sendto(b"x", ("8.8.8.8", 53))
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("huggingface.co", 443)
    with pytest.raises(urllib.error.URLError):  # through the dead proxy
        urllib.request.urlopen("https://huggingface.co/api/models", timeout=5)
    requests = pytest.importorskip("requests")
    with pytest.raises(requests.ConnectionError):
        requests.get("https://api.labelbox.com/graphql", timeout=5)


def test_hub_downloads_fail(tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    with pytest.raises(Exception) as caught:
        hub.hf_hub_download("bert-base-uncased", "config.json", cache_dir=tmp_path)
    assert not isinstance(caught.value, AssertionError)
    assert not list(tmp_path.rglob("config.json"))


def test_loopback_still_reaches_the_fake_labelbox(fake):
    # An HTTP error means the fake answered: the connection went through.
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(fake.base_url + "/media/missing", timeout=5)


def test_subprocesses_inherit_the_guard():
    code = """
import json, socket, urllib.request
out = {}
try:
    socket.create_connection(("192.0.2.1", 443), timeout=2)
    out["connect"] = "connected"
except Exception as exc:
    out["connect"] = type(exc).__name__
try:
    urllib.request.urlopen("http://example.com/", timeout=5)
    out["http"] = "fetched"
except Exception as exc:
    out["http"] = type(exc).__name__
import os
out["hf"] = os.environ.get("HF_HUB_OFFLINE")
print(json.dumps(out))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    out = json.loads(done.stdout)
    assert out == {"connect": "NetworkAccessBlocked", "http": "URLError", "hf": "1"}, out
