"""The testbed's registry (Debian's docker-registry on loopback) and images/push.sh against it:
an image pushed with skopeo is served back under its tag, the storage outlives the process,
the process stops cleanly, and `make push`'s script puts two images and the chart where
`helm install oci://...` finds them, or says what is wrong."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lbtrain_dev.testbed.binaries import repo_root
from lbtrain_dev.testbed.controlplane import free_port
from lbtrain_dev.testbed.node import docker_archive
from lbtrain_dev.testbed.registry import (
    Registry,
    pick_port,
    port_is_free,
    registry_config,
    stale_tags,
)

REPO = repo_root()
PUSH = REPO / "images" / "push.sh"
APP_VERSION = yaml.safe_load((REPO / "deploy/helm/lbtrain/Chart.yaml").read_text())["appVersion"]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def small_archive(folder: Path, name: str, text: str) -> Path:
    """A one-layer docker-archive, as images/build.sh leaves (a few bytes instead of GBs)."""
    path = folder / f"{name}.tar"
    path.write_bytes(docker_archive(f"localhost/{name}:1", {"hello": text.encode()}, ["/hello"]))
    return path


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    # A port of its own: the fixed one may be held by a session's long-lived registry.
    with Registry(tmp_path / "storage", port=free_port()) as reg:
        yield reg


def test_the_config_listens_on_loopback_only_and_stores_in_the_cache(tmp_path: Path) -> None:
    conf = registry_config(tmp_path / "store", 5117)
    assert conf["http"]["addr"] == "127.0.0.1:5117"
    assert conf["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "store")
    assert "auth" not in conf and "tls" not in conf["http"]


def test_a_taken_port_gives_another_free_one() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = pick_port(port)
    assert other != port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", other))  # free, as promised


def test_pushed_image_is_served_under_its_tag_and_outlives_the_process(tmp_path: Path) -> None:
    archive = small_archive(tmp_path, "small", "hello from the registry test")
    reg = Registry(tmp_path / "storage", port=free_port()).start()
    try:
        done = skopeo(
            "copy", "--dest-tls-verify=false", "--format=oci",
            "--digestfile", str(tmp_path / "digest"),
            f"docker-archive:{archive}", f"docker://{reg.host}/ml/small:t1",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        digest, manifest = reg.manifest("ml/small", "t1")
        assert digest == (tmp_path / "digest").read_text().strip()
        assert manifest["mediaType"] == OCI_MANIFEST
        [layer] = manifest["layers"]
        assert layer["mediaType"].endswith("tar+gzip")
    finally:
        reg.stop()
    assert not reg.running
    with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", reg.port or 0), timeout=5).close()
    assert port_is_free(reg.port or 0), "a registry just stopped leaves its port to the next"
    # The storage is a cache: a new process (any port) serves what the old one stored.
    with Registry(tmp_path / "storage", port=free_port()) as again:
        assert again.manifest("ml/small", "t1")[0] == digest


def test_stale_tags_are_all_but_the_newest() -> None:
    tags = {"e2e.a": 10.0, "e2e.b": 30.0, "e2e.c": 20.0, "e2e.d": 5.0}
    assert stale_tags(tags, keep=2) == ["e2e.d", "e2e.a"]
    assert stale_tags(tags, keep=4) == []
    assert stale_tags({}, keep=1) == []


def test_the_cache_keeps_only_the_newest_tags_and_their_blobs(tmp_path: Path) -> None:
    """Each session pushes under a new tag; the cache must not grow by an image per session."""
    storage = tmp_path / "storage"
    blobs = storage / "docker" / "registry" / "v2" / "blobs"
    with Registry(storage, port=free_port(), keep_tags=None) as reg:
        for n in (1, 2, 3):
            archive = small_archive(tmp_path, f"small{n}", f"layer of session {n}")
            done = skopeo(
                "copy", "--dest-tls-verify=false", "--format=oci",
                f"docker-archive:{archive}", f"docker://{reg.host}/ml/small:s{n}",
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        first_layer = reg.manifest("ml/small", "s1")[1]["layers"][0]["digest"]
    algorithm, hexdigest = first_layer.split(":")
    first_blob = blobs / algorithm / hexdigest[:2] / hexdigest
    assert first_blob.is_dir()
    with Registry(storage, port=free_port(), keep_tags=2) as again:
        assert again.pruned == ["ml/small:s1"]
        assert again.manifest("ml/small", "s3")[0] and again.manifest("ml/small", "s2")[0]
        with pytest.raises(urllib.error.HTTPError) as gone:
            again.manifest("ml/small", "s1")
        assert gone.value.code == 404
    assert not first_blob.exists(), "the blob only the untagged image used is collected"


def test_a_missing_binary_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    from lbtrain_dev.testbed import StartError

    with pytest.raises(StartError, match="docker-registry is not on PATH"):
        Registry(tmp_path / "storage", port=free_port()).start()


# --- images/push.sh ---------------------------------------------------------------------------


def push(
    env: dict[str, str], *archives: Path, helm: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", **env}
    if helm is not None:
        full["HELM"] = str(helm)
    return subprocess.run(
        ["bash", str(PUSH), *map(str, archives)],
        capture_output=True, text=True, env=full, timeout=300, check=False,
    )  # fmt: skip


def helm_env(home: Path) -> dict[str, str]:
    return {
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def test_push_sends_both_images_and_the_chart_a_user_installs(
    tmp_path: Path, registry: Registry, testbed_bin: Path
) -> None:
    lbtrain = small_archive(tmp_path, "lbtrain", "webhook and operator")
    trainer = small_archive(tmp_path, "lbtrain-trainer", "trainer")
    tag = f"0.1.0-test.t{secrets.token_hex(4)}"
    target = f"{registry.host}/ml"
    env = {"REGISTRY": target, "TAG": tag, "PLAIN_HTTP": "1", "COMPRESSION_LEVEL": "1"}
    env |= helm_env(tmp_path / "helm")
    done = push(env, lbtrain, trainer, helm=testbed_bin / "helm")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == f"oci://{target}/charts/lbtrain:{tag}"
    pushed = dict(line.split(" ", 1) for line in lines[:-1])
    assert set(pushed) == {f"{target}/lbtrain:{tag}", f"{target}/lbtrain-trainer:{tag}"}
    for name in ("lbtrain", "lbtrain-trainer"):
        digest, manifest = registry.manifest(f"ml/{name}", tag)
        assert pushed[f"{target}/{name}:{tag}"] == digest
        assert manifest["mediaType"] == OCI_MANIFEST
    # The chart is there under the same version, and runs images of that tag by default.
    helm = subprocess.run(
        [str(testbed_bin / "helm"), "show", "chart", f"oci://{target}/charts/lbtrain",
         f"--version={tag}", "--plain-http"],
        capture_output=True, text=True, env={**os.environ, **helm_env(tmp_path / "helm")},
        timeout=60, check=False,
    )  # fmt: skip
    assert helm.returncode == 0, helm.stderr
    chart = yaml.safe_load(helm.stdout)
    assert (chart["name"], chart["version"], chart["appVersion"]) == ("lbtrain", tag, tag)


def test_push_without_registry_says_what_to_set() -> None:
    done = push({"REGISTRY": ""})
    assert done.returncode == 2
    assert "REGISTRY is not set" in done.stderr and "make push REGISTRY=" in done.stderr


def test_push_without_archives_says_make_images(tmp_path: Path, testbed_bin: Path) -> None:
    env = {"REGISTRY": "127.0.0.1:1/ml", "LBTRAIN_IMAGE_CACHE": str(tmp_path / "empty")}
    done = push(env, helm=testbed_bin / "helm")
    assert done.returncode == 2
    assert "no image archives" in done.stderr and "make images" in done.stderr
    done = push(env, tmp_path / "gone.tar", tmp_path / "gone2.tar", helm=testbed_bin / "helm")
    assert done.returncode == 2
    assert f"{tmp_path / 'gone.tar'} does not exist" in done.stderr


def test_a_registry_that_refuses_is_quoted(tmp_path: Path, testbed_bin: Path) -> None:
    lbtrain = small_archive(tmp_path, "lbtrain", "a")
    trainer = small_archive(tmp_path, "lbtrain-trainer", "b")
    env = {"REGISTRY": "127.0.0.1:1/ml", "PLAIN_HTTP": "1"}  # a closed port
    done = push(env, lbtrain, trainer, helm=testbed_bin / "helm")
    assert done.returncode == 2
    assert f"pushing 127.0.0.1:1/ml/lbtrain:{APP_VERSION} failed" in done.stderr
    assert "connection refused" in done.stderr, done.stderr


def test_a_tag_helm_cannot_version_is_refused_before_anything_is_sent(
    tmp_path: Path, testbed_bin: Path
) -> None:
    env = {"REGISTRY": "127.0.0.1:1/ml", "TAG": "latest"}
    done = push(env, helm=testbed_bin / "helm")
    assert done.returncode == 2 and "TAG=latest is not a SemVer version" in done.stderr


def test_the_same_archive_pushed_again_is_the_same_manifest(
    tmp_path: Path, registry: Registry
) -> None:
    """The same archive pushed twice under two tags is one manifest: a warm push sends no new
    layer (what lets the real-node test push gigabytes under a fresh tag each session)."""
    archive = small_archive(tmp_path, "same", "same bytes")
    digests = []
    for tag in ("a", "b"):
        done = skopeo(
            "copy", "--dest-tls-verify=false", "--format=oci",
            "--dest-compress-format=gzip", "--dest-compress-level=1",
            f"docker-archive:{archive}", f"docker://{registry.host}/ml/same:{tag}",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        digests.append(registry.manifest("ml/same", tag)[0])
    assert digests[0] == digests[1]
