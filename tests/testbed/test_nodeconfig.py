"""The real node's configuration: what keeps its traffic inside the testbed, what this sandbox
needs, and the sandbox image it builds itself."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import re
import tarfile
import tomllib
from pathlib import Path

import pytest

from lbtrain_dev.testbed import nodeconfig as nc
from lbtrain_dev.testbed.node import docker_archive


def paths(tmp_path: Path) -> nc.NodePaths:
    return nc.NodePaths(tmp_path / "run", tmp_path / "store")


def test_pods_have_routes_only_to_pods_and_services(tmp_path: Path) -> None:
    conf = nc.cni_conflist(paths(tmp_path))
    bridge = conf["plugins"][0]
    assert bridge["bridge"] == nc.BRIDGE
    assert bridge["ipMasq"] is False
    routes = [r["dst"] for r in bridge["ipam"]["routes"]]
    assert routes == [nc.SERVICE_CIDR], "no default route: a pod cannot reach past the testbed"
    [[subnet]] = bridge["ipam"]["ranges"]
    assert ipaddress.ip_address(subnet["gateway"]) in ipaddress.ip_network(nc.POD_CIDR)
    assert subnet["gateway"] == nc.node_ip()


def test_containerd_keeps_its_state_and_mounts_in_the_run_folder(tmp_path: Path) -> None:
    p = paths(tmp_path)
    conf = tomllib.loads(nc.containerd_config(p))
    cri = conf["plugins"]["io.containerd.grpc.v1.cri"]
    assert conf["root"] == str(p.store)
    assert conf["state"] == str(p.containerd_state)
    assert conf["grpc"]["address"] == str(p.containerd_socket)
    assert cri["sandbox_image"] == nc.PAUSE_IMAGE and cri["sandbox_image"].startswith("localhost/")
    assert cri["restrict_oom_score_adj"] is True  # the sandbox lacks CAP_SYS_RESOURCE
    assert cri["netns_mounts_under_state_dir"] is True  # so `down` finds every netns mount
    runc = cri["containerd"]["runtimes"]["runc"]["options"]
    assert runc["Root"].startswith(str(p.run_dir))


def test_only_the_api_server_may_use_the_kubelets_api(tmp_path: Path) -> None:
    conf = nc.kubelet_config(paths(tmp_path), tmp_path / "pki", nc.KubeletPorts(1, 2))
    assert conf["authentication"]["anonymous"]["enabled"] is False
    assert conf["authentication"]["x509"]["clientCAFile"] == str(tmp_path / "pki" / "ca.crt")
    assert conf["readOnlyPort"] == 0
    assert conf["address"] == nc.node_ip()
    assert conf["healthzBindAddress"] == "127.0.0.1"
    assert conf["resolvConf"] == ""  # no name is resolved outside the testbed


def test_the_node_has_no_gpu_label_only_the_gpu_resource(tmp_path: Path) -> None:
    """No GPU Feature Discovery label: the chart's default templates must place on a node that
    only advertises nvidia.com/gpu, as a device plugin alone leaves it."""
    args = nc.kubelet_args(paths(tmp_path), tmp_path / "kc")
    assert not any(a.startswith("--node-labels") for a in args), args
    assert not any("gpu.present" in a for a in args), args
    assert f"--node-ip={nc.node_ip()}" in args
    proxy = nc.proxy_args(tmp_path / "kc", 1, 2)
    assert f"--nodeport-addresses={nc.node_ip()}/32" in proxy


def test_the_sandbox_image_is_a_docker_archive_ctr_can_import() -> None:
    data = docker_archive("localhost/x:1", {"pause": b"\x7fELF-binary"}, ["/pause"])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        [manifest] = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert manifest["RepoTags"] == ["localhost/x:1"]
        layer = tar.extractfile(manifest["Layers"][0]).read()  # type: ignore[union-attr]
        config = json.loads(tar.extractfile(manifest["Config"]).read())  # type: ignore[union-attr]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert config["config"]["Entrypoint"] == ["/pause"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as inner:
        member = inner.getmember("pause")
        assert member.mode & 0o111


def test_importing_a_new_image_drops_the_old_tags_and_their_ids() -> None:
    from lbtrain_dev.testbed.node import stale_refs

    digests = {
        "localhost/lbtrain-pause:1": "sha256:p",
        "localhost/lbtrain-trainer:old": "sha256:t1",
        "localhost/lbtrain:cur": "sha256:l",
        "sha256:id-pause": "sha256:p",
        "sha256:id-old-trainer": "sha256:t1",
        "sha256:id-lbtrain": "sha256:l",
        "sha256:id-long-gone": "sha256:t0",
    }
    assert stale_refs(digests, "localhost/lbtrain-trainer:new") == [
        "localhost/lbtrain-trainer:old",
        "sha256:id-long-gone",
        "sha256:id-old-trainer",
    ]


def test_the_node_pulls_from_the_testbeds_registry_over_plain_http(tmp_path: Path) -> None:
    """containerd reads hosts.toml under its config_path at each pull: the one written for the
    testbed's registry sends pulls of 127.0.0.1:<port>/... there over HTTP, and nowhere else."""
    from lbtrain_dev.testbed.node import trust_registry

    p = paths(tmp_path)
    cri = tomllib.loads(nc.containerd_config(p))["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["registry"]["config_path"] == str(p.registry_hosts)
    written = trust_registry(p, "127.0.0.1:5117")
    assert written == p.registry_hosts / "127.0.0.1:5117" / "hosts.toml"
    hosts = tomllib.loads(written.read_text())
    assert hosts["server"] == "http://127.0.0.1:5117"
    assert hosts["host"] == {"http://127.0.0.1:5117": {"capabilities": ["pull", "resolve"]}}


@pytest.mark.parametrize("host", ["registry.internal:5000", "10.0.0.5:5000", "127.0.0.1"])
def test_only_a_loopback_registry_is_trusted_over_http(host: str) -> None:
    with pytest.raises(ValueError, match=re.escape(host)):
        nc.registry_hosts_toml(host)
