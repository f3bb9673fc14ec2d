"""Cluster DNS on the real node: pods find a Service by name, and an Indexed Job's pods find
each other as `<job>-<index>.<subdomain>`, the shape a multi-pod training run uses to reach its
rank 0. The pods run the lbtrain image (its Python does the lookups and the TCP exchange), on a
node of this module's own with CoreDNS as the testbed starts it.

The first tests check the configuration itself (no node needed): what the Corefile serves and
binds, and what the kubelet writes into a pod's resolv.conf.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lbtrain_dev.images import BuiltImage, ensure_images
from lbtrain_dev.testbed import ControlPlane, dns
from lbtrain_dev.testbed import nodeconfig as nc
from lbtrain_dev.testbed.cli import default_node_store
from lbtrain_dev.testbed.node import import_image, leftovers

RANK0_PORT = 29500


# --- the configuration -----------------------------------------------------------------------
def test_corefile_serves_the_cluster_zones_on_the_bridge_address_only(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "admin.kubeconfig"
    text = dns.corefile(kubeconfig, 18181)
    first = text.splitlines()[0]
    assert first.split()[:-1] == ["cluster.local:53", "in-addr.arpa:53", "ip6.arpa:53"]
    assert f"bind {nc.node_ip()}\n" in text  # never the machine's own interfaces
    assert f"kubeconfig {kubeconfig}\n" in text
    assert "ready 127.0.0.1:18181\n" in text
    # No upstream: a name outside the cluster is refused, never sent anywhere.
    assert "forward" not in text and "fallthrough" not in text


def test_kubelet_names_the_testbed_dns_in_every_pods_resolv_conf(tmp_path: Path) -> None:
    paths = nc.NodePaths(tmp_path / "run", tmp_path / "store")
    conf = nc.kubelet_config(paths, tmp_path / "pki", nc.KubeletPorts(1, 2))
    assert conf["clusterDNS"] == [nc.node_ip()]  # where CoreDNS binds
    assert conf["clusterDomain"] == "cluster.local" == nc.CLUSTER_DOMAIN
    assert conf["resolvConf"] == ""  # the machine's own nameservers are never merged in


def fresh_namespace(plane: ControlPlane) -> Iterator[str]:
    name = f"dns-{secrets.token_hex(4)}"
    plane.kubectl("create", "namespace", name, check=True)
    plane.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, check=True)
    yield name
    plane.kubectl("delete", "namespace", name, "--wait=false")


# --- CoreDNS against the API server (no node) -------------------------------------------------
REFUSED = 5


def a_query(name: str, qid: int) -> bytes:
    """A DNS query for the A record of `name` (RFC 1035 wire format, recursion desired)."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return struct.pack(">6H", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(">2H", 1, 1)


def _skip_name(msg: bytes, at: int) -> int:
    while msg[at]:
        if msg[at] & 0xC0 == 0xC0:  # a compression pointer ends the name
            return at + 2
        at += msg[at] + 1
    return at + 1


def a_answers(msg: bytes) -> tuple[int, list[str]]:
    """The response code and the A records' addresses of a DNS response."""
    _, flags, questions, answers = struct.unpack(">4H", msg[:8])
    at = 12
    for _ in range(questions):
        at = _skip_name(msg, at) + 4
    found = []
    for _ in range(answers):
        at = _skip_name(msg, at)
        rtype, _, _, length = struct.unpack(">HHIH", msg[at : at + 10])
        at += 10
        if rtype == 1:
            found.append(socket.inet_ntoa(msg[at : at + length]))
        at += length
    return flags & 0x000F, found


def lookup(port: int, name: str) -> tuple[int, list[str]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        qid = secrets.randbelow(0xFFFF)
        sock.sendto(a_query(name, qid), ("127.0.0.1", port))
        reply, _ = sock.recvfrom(4096)
    assert struct.unpack(">H", reply[:2])[0] == qid
    return a_answers(reply)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def coredns_on_loopback(control_plane: ControlPlane, tmp_path: Path) -> Iterator[int]:
    """The testbed's CoreDNS with the node's Corefile, but on 127.0.0.1 and a free port, against
    the session's control plane; yields the port."""
    port, ready_port = free_udp_port(), free_udp_port()
    conf = tmp_path / "Corefile"
    conf.write_text(dns.corefile(control_plane.kubeconfig, ready_port, host="127.0.0.1", port=port))
    log = (tmp_path / "coredns.log").open("wb")
    proc = subprocess.Popen(
        [str(dns.ensure_dns_binary()), *dns.coredns_args(conf)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if dns.dns_ready(ready_port):
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "coredns.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "coredns.log").read_text()
            time.sleep(0.1)
        yield port
    finally:
        proc.kill()
        proc.wait()
        log.close()


@pytest.fixture
def api_ns(control_plane: ControlPlane) -> Iterator[str]:
    yield from fresh_namespace(control_plane)


@pytest.mark.testbed
def test_coredns_answers_services_and_job_pod_hostnames_from_the_api_server(
    control_plane: ControlPlane, coredns_on_loopback: int, api_ns: str
) -> None:
    """The records a scale-out run needs, straight from the API server's objects: a ClusterIP
    Service's address, and a pod's `<hostname>.<headless svc>` from the EndpointSlice (what the
    endpointslice controller writes for an Indexed Job's pods; hand-made here, no node). A name
    outside the cluster is refused at once."""
    ns, port = api_ns, coredns_on_loopback
    objs = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "ranks", "namespace": ns},
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": {"batch.kubernetes.io/job-name": "train"},
                "ports": [{"port": RANK0_PORT}],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "ranks-1",
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": "ranks"},
            },
            "addressType": "IPv4",
            "endpoints": [
                {
                    "addresses": ["10.244.0.70"],
                    "hostname": "train-0",
                    "conditions": {"ready": True},
                },
                {
                    "addresses": ["10.244.0.71"],
                    "hostname": "train-1",
                    "conditions": {"ready": True},
                },
            ],
            "ports": [{"port": RANK0_PORT, "protocol": "TCP"}],
        },
    ]
    control_plane.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}),
        check=True,
    )  # fmt: skip
    cluster_ip = control_plane.kubectl(
        "get", "service", "web", "-n", ns, "-o", "jsonpath={.spec.clusterIP}", check=True
    ).stdout.strip()

    def answered(name: str) -> tuple[int, list[str]]:
        deadline = time.monotonic() + 10  # the informers see new objects within a moment
        while (got := lookup(port, name))[1] == [] and time.monotonic() < deadline:
            time.sleep(0.2)
        return got

    assert answered(f"web.{ns}.svc.cluster.local") == (0, [cluster_ip])
    assert answered(f"train-0.ranks.{ns}.svc.cluster.local") == (0, ["10.244.0.70"])
    assert answered(f"train-1.ranks.{ns}.svc.cluster.local") == (0, ["10.244.0.71"])
    assert sorted(answered(f"ranks.{ns}.svc.cluster.local")[1]) == ["10.244.0.70", "10.244.0.71"]
    assert lookup(port, f"train-2.ranks.{ns}.svc.cluster.local")[1] == []
    assert lookup(port, "lbtrain-nothing.invalid") == (REFUSED, [])


# --- on the real node ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lbtrain_image(request: pytest.FixtureRequest) -> BuiltImage:
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        return ensure_images().lbtrain


@pytest.fixture(scope="module")
def dns_node(testbed_bin: Path, lbtrain_image: BuiltImage) -> Iterator[ControlPlane]:
    """A real node (CoreDNS included), the lbtrain image imported. `down` must leave nothing
    behind, CoreDNS included: asserted on teardown."""
    store = default_node_store()
    with tempfile.TemporaryDirectory(prefix="lbtrain-node-") as run_dir:
        plane = ControlPlane(testbed_bin, Path(run_dir), node_store=store)
        plane.start(die_with_parent=True, timeout=180)
        try:
            assert plane.running()["coredns"]
            import_image(plane.node_paths, lbtrain_image.archive, lbtrain_image.ref)
            yield plane
        finally:
            plane.stop()
        left = leftovers(Path(run_dir), store)
        assert not left, f"testbed down left behind: {left}"


@pytest.fixture
def ns(dns_node: ControlPlane) -> Iterator[str]:
    yield from fresh_namespace(dns_node)


def apply(plane: ControlPlane, ns: str, *objs: dict[str, Any]) -> None:
    body = {"apiVersion": "v1", "kind": "List", "items": list(objs)}
    plane.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(body), check=True)


def python_container(image: BuiltImage, script: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "main",
        "image": image.ref,
        "imagePullPolicy": "Never",
        "command": ["python3", "-c", textwrap.dedent(script)],
        **extra,
    }


def pod_json(plane: ControlPlane, ns: str, selector: str) -> list[dict[str, Any]]:
    done = plane.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json", check=True)
    return list(json.loads(done.stdout)["items"])


def dns_warnings(plane: ControlPlane, ns: str) -> list[str]:
    done = plane.kubectl(
        "get", "events", "-n", ns, "--field-selector=reason=MissingClusterDNS",
        "-o", "jsonpath={.items[*].message}", check=True,
    )  # fmt: skip
    return done.stdout.split()


def wait_ok(plane: ControlPlane, ns: str, what: str, condition: str, timeout: int = 180) -> None:
    done = plane.kubectl(
        "wait", f"--for={condition}", what, "-n", ns, f"--timeout={timeout}s",
        timeout=timeout + 30,
    )  # fmt: skip
    if done.returncode != 0:
        print(plane.kubectl("get", "pods,events", "-n", ns, "-o", "wide").stdout)
        print(plane.kubectl("logs", "-n", ns, "-l", "dns-test", "--tail=40").stdout)
        print((plane.run_dir / "logs" / "coredns.log").read_text()[-3000:])
    assert done.returncode == 0, done.stderr


@pytest.mark.testbed
@pytest.mark.slow
def test_a_pod_reaches_a_service_by_its_short_and_full_names(
    dns_node: ControlPlane, lbtrain_image: BuiltImage, ns: str
) -> None:
    server = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web", "dns-test": "server"}},
        "spec": {
            "containers": [
                python_container(
                    lbtrain_image,
                    "import http.server\n"
                    "http.server.ThreadingHTTPServer(('', 8080), "
                    "http.server.SimpleHTTPRequestHandler).serve_forever()",
                    readinessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                )
            ]
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    client = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "labels": {"dns-test": "client"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                python_container(
                    lbtrain_image,
                    f"""
                    import socket, time, urllib.request
                    print("resolv.conf:", open("/etc/resolv.conf").read().replace("\\n", " | "))
                    for name in ("web", "web.{ns}.svc.cluster.local"):
                        print("resolved", name, socket.gethostbyname(name), flush=True)
                    started = time.monotonic()
                    try:
                        socket.gethostbyname("lbtrain-nothing.invalid")
                    except socket.gaierror:
                        print("refused-in", round(time.monotonic() - started, 2), flush=True)
                    for _ in range(60):
                        try:
                            with urllib.request.urlopen("http://web/", timeout=5) as resp:
                                print("http", resp.status, flush=True)
                                break
                        except OSError:
                            time.sleep(1)
                    """,
                )
            ],
        },
    }
    apply(dns_node, ns, server, service)
    wait_ok(dns_node, ns, "pod/web", "condition=Ready")
    apply(dns_node, ns, client)
    wait_ok(dns_node, ns, "pod/client", "jsonpath={.status.phase}=Succeeded")

    cluster_ip = dns_node.kubectl(
        "get", "service", "web", "-n", ns, "-o", "jsonpath={.spec.clusterIP}", check=True
    ).stdout.strip()
    log = dns_node.kubectl("logs", "client", "-n", ns, check=True).stdout
    print(log)
    lines = {tuple(line.split()[:2]): line.split()[2:] for line in log.splitlines() if line}
    assert f"nameserver {nc.node_ip()}" in log
    assert f"search {ns}.svc.cluster.local svc.cluster.local cluster.local" in log
    assert lines[("resolved", "web")] == [cluster_ip]
    assert lines[("resolved", f"web.{ns}.svc.cluster.local")] == [cluster_ip]
    assert ("http", "200") in lines, "the name led to the Service's pod"
    # A name outside the cluster fails at once (refused), not after resolver timeouts.
    [refused_in] = [line.split()[1] for line in log.splitlines() if line.startswith("refused-in")]
    assert float(refused_in) < 2.0
    assert dns_warnings(dns_node, ns) == []


RANK_SCRIPT = f"""
import os, socket, sys, time
index = int(os.environ["JOB_COMPLETION_INDEX"])
deadline = time.monotonic() + 120
if index == 0:
    with socket.create_server(("", {RANK0_PORT})) as server:
        server.settimeout(120)
        conn, peer = server.accept()
        with conn:
            conn.sendall(b"rank0 got " + conn.recv(64))
    print("served", peer[0], flush=True)
    sys.exit(0)
name = os.environ["RANK0"]
while True:
    try:
        address = socket.gethostbyname(name)
        break
    except socket.gaierror:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.5)
print("resolved", name, address, flush=True)
while True:
    try:
        with socket.create_connection((name, {RANK0_PORT}), timeout=5) as conn:
            conn.sendall(b"hello")
            print("answer", conn.recv(64).decode(), flush=True)
            break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.5)
"""


@pytest.mark.testbed
@pytest.mark.slow
def test_an_indexed_job_pod_reaches_index_0_by_its_hostname(
    dns_node: ControlPlane, lbtrain_image: BuiltImage, ns: str
) -> None:
    """The scale-out shape: a headless Service (publishing pods before they are Ready, as
    ranks must find each other while starting) named as the Job's subdomain; pod 1 resolves
    `<job>-0.<svc>` to pod 0's address and exchanges bytes with it."""
    job, svc = "train", "ranks"
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": svc},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"batch.kubernetes.io/job-name": job},
            "ports": [{"name": "rendezvous", "port": RANK0_PORT}],
        },
    }
    indexed = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job},
        "spec": {
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"dns-test": "rank"}},
                "spec": {
                    "subdomain": svc,
                    "restartPolicy": "Never",
                    "containers": [
                        python_container(
                            lbtrain_image,
                            RANK_SCRIPT,
                            env=[{"name": "RANK0", "value": f"{job}-0.{svc}"}],
                        )
                    ],
                },
            },
        },
    }
    apply(dns_node, ns, service, indexed)
    wait_ok(dns_node, ns, f"job/{job}", "condition=Complete")

    pods = {
        p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]: p
        for p in pod_json(dns_node, ns, f"batch.kubernetes.io/job-name={job}")
    }
    assert sorted(pods) == ["0", "1"]
    assert pods["0"]["spec"]["hostname"] == f"{job}-0"  # set by the Job controller
    rank0_ip = pods["0"]["status"]["podIP"]
    rank1 = dns_node.kubectl("logs", pods["1"]["metadata"]["name"], "-n", ns, check=True).stdout
    rank0 = dns_node.kubectl("logs", pods["0"]["metadata"]["name"], "-n", ns, check=True).stdout
    print(rank0, rank1)
    assert f"resolved {job}-0.{svc} {rank0_ip}" in rank1
    assert "answer rank0 got hello" in rank1
    assert f"served {pods['1']['status']['podIP']}" in rank0
    assert dns_warnings(dns_node, ns) == []
