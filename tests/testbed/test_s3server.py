"""The S3 server of the object-store tests (lbtrain_dev.testbed.s3server): versitygw really
serves S3 on a free loopback port, with its own keys, over a temporary root, and stops cleanly.

These talk to it with s3fs, as the trainer does, and with plain HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
import s3fs

from lbtrain_dev.testbed.s3server import S3Server, s3_server


def client(server: S3Server, **overrides: str) -> s3fs.S3FileSystem:
    env = server.env()
    options = {
        "key": env["AWS_ACCESS_KEY_ID"],
        "secret": env["AWS_SECRET_ACCESS_KEY"],
        "endpoint_url": server.endpoint,
        **overrides,
    }
    return s3fs.S3FileSystem(skip_instance_cache=True, **options)


def test_objects_written_through_s3_land_in_the_bucket_folder(s3_binary: Path) -> None:
    with s3_server(["runs"], binary=s3_binary) as server:
        assert server.endpoint.startswith("http://127.0.0.1:")
        fs = client(server)
        fs.pipe("runs/mr1/model/weights.pt", b"\x00weights")
        assert fs.cat("runs/mr1/model/weights.pt") == b"\x00weights"
        assert (server.bucket_path("runs") / "mr1/model/weights.pt").read_bytes() == b"\x00weights"
        assert sorted(fs.ls("")) == ["runs"]


def test_a_wrong_secret_is_refused_and_a_missing_bucket_is_not_found(s3_binary: Path) -> None:
    with s3_server(["runs"], binary=s3_binary) as server:
        with pytest.raises(PermissionError):
            client(server, secret="not-the-secret").pipe("runs/x", b"1")
        with pytest.raises(FileNotFoundError):
            client(server).pipe("no-such-bucket/x", b"1")
        assert list(server.bucket_path("runs").iterdir()) == []


def test_an_unsigned_request_gets_an_s3_error_not_the_data(s3_binary: Path) -> None:
    with s3_server(["runs"], binary=s3_binary) as server:
        client(server).pipe("runs/secret.txt", b"private")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.endpoint}/runs/secret.txt", timeout=5)
        assert refused.value.code == 403
        assert b"private" not in refused.value.read()


def test_stop_ends_the_process_frees_the_port_and_removes_the_root(s3_binary: Path) -> None:
    with s3_server(["a", "b"], binary=s3_binary) as server:
        root = server.root
        assert sorted(p.name for p in root.iterdir()) == ["a", "b"]
        assert server.running()
    assert not server.running()
    assert not root.exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{server.endpoint}/", timeout=2)


def test_two_servers_have_their_own_ports_and_keys(s3_binary: Path, tmp_path: Path) -> None:
    with S3Server(s3_binary, tmp_path / "one") as one, S3Server(s3_binary, tmp_path / "two") as two:
        assert one.port != two.port
        assert one.access_key != two.access_key and one.secret_key != two.secret_key
        one.create_bucket("shared")
        two.create_bucket("shared")
        client(one).pipe("shared/x", b"one")
        assert not (two.bucket_path("shared") / "x").exists()
        with pytest.raises(OSError, match="No user exists"):  # one's keys mean nothing to two
            client(two, key=one.access_key, secret=one.secret_key).pipe("shared/x", b"1")


def test_a_binary_that_cannot_serve_fails_start_with_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "versitygw"
    fake.write_text("#!/bin/sh\necho 'cannot open root' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="cannot open root"):
        S3Server(fake, tmp_path / "root").start(timeout=10)
