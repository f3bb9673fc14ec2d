"""Starting and stopping etcd, kube-apiserver and kube-controller-manager on 127.0.0.1, and
optionally a real node (containerd, CoreDNS, kubelet, kube-scheduler, kube-proxy; see `node.py`
and `dns.py`).

Everything a running control plane needs (certificates, logs, etcd data, the admin kubeconfig,
the state file with pids and ports) lives in one run folder, so `lbtrain testbed down` from
another shell, or a pytest session, can find and stop it.

With a node, the API server listens on the node's bridge address instead of 127.0.0.1: pods
reach it through the `kubernetes` Service, and a pod's 127.0.0.1 is its own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lbtrain_dev.testbed import dns
from lbtrain_dev.testbed import node as nodeio
from lbtrain_dev.testbed import nodeconfig as nc
from lbtrain_dev.testbed.pki import write_pki

K8S_VERSION = "v1.35.4"
# The controllers that make Jobs behave as on a real cluster; nothing that needs a kubelet.
CONTROLLERS = (
    "job-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "namespace-controller",
    "serviceaccount-controller",
)
# What a real node adds: the controllers of the chart's Deployments and PodDisruptionBudget, the
# node's taints, the kube-root-ca.crt ConfigMap every pod mounts, Service endpoints, and the
# binding of a PersistentVolumeClaim to a PersistentVolume.
NODE_CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "disruption-controller",
    "node-lifecycle-controller",
    "root-ca-certificate-publisher-controller",
    "endpointslice-controller",
    "persistentvolume-binder-controller",
    "pod-garbage-collector-controller",
)
ADMIN_USER = "testbed-admin"


class StartError(RuntimeError):
    """A component did not come up; names it and carries the tail of its log."""

    def __init__(self, component: str, why: str, log: Path | None) -> None:
        tail = ""
        if log is not None and log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        super().__init__(
            f"testbed: {component} failed to start: {why}"
            + (f"\n--- last lines of {log} ---\n{tail}" if tail else "")
        )
        self.component = component


class KubectlError(RuntimeError):
    """A kubectl step against the testbed failed; names the step and carries kubectl's words."""

    def __init__(self, step: str, stderr: str) -> None:
        super().__init__(f"testbed: {step} failed: {stderr.strip() or 'no message'}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class State:
    """What a running control plane is: written to state.json in its run folder."""

    run_dir: str
    bin_dir: str
    etcd_port: int = 0
    etcd_peer_port: int = 0
    apiserver_port: int = 0
    kcm_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)
    host: str = "127.0.0.1"
    # A real node: where its images live, its ports, and the sysctls to restore on `down`.
    node_store: str = ""
    dns_binary: str = ""  # CoreDNS, the node's cluster DNS (testbed/build-dns.sh)
    node_ports: dict[str, int] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    # This plane holds the machine's one node: only then may `stop` tear the node's network
    # down. A start refused because another node runs must leave that node alone.
    node_claimed: bool = False

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.apiserver_port}"

    @property
    def node(self) -> bool:
        return bool(self.node_store)


class ControlPlane:
    """One local control plane. `start()` blocks until every component answers healthy."""

    def __init__(
        self,
        bin_dir: Path,
        run_dir: Path,
        *,
        node_store: Path | None = None,
        dns_binary: Path | None = None,
    ) -> None:
        """`node_store`: start a real node too, keeping its containerd images there.
        `dns_binary`: the node's CoreDNS; by default built (or found cached) at start."""
        self.bin_dir = bin_dir
        self.run_dir = run_dir
        self.state = State(run_dir=str(run_dir), bin_dir=str(bin_dir))
        if node_store is not None:
            self.state.node_store = str(node_store)
            self.state.host = nc.node_ip()
            self.state.dns_binary = str(dns_binary) if dns_binary else ""
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # --- paths ---------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.run_dir / "admin.kubeconfig"

    @property
    def pki(self) -> Path:
        return self.run_dir / "pki"

    def log(self, component: str) -> Path:
        return self.run_dir / "logs" / f"{component}.log"

    @property
    def server(self) -> str:
        return self.state.server

    def admin_token(self) -> str:
        return (self.run_dir / "admin.token").read_text().strip()

    @property
    def node_paths(self) -> nc.NodePaths:
        return nc.NodePaths(self.run_dir, Path(self.state.node_store))

    # --- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def load(cls, run_dir: Path) -> ControlPlane:
        data = json.loads((run_dir / "state.json").read_text())
        plane = cls(Path(data["bin_dir"]), run_dir)
        plane.state = State(**data)
        return plane

    def start(self, *, die_with_parent: bool = False, timeout: float = 90.0) -> None:
        """Start etcd, then kube-apiserver, then kube-controller-manager; wait for each. With a
        node, then containerd, CoreDNS, the kubelet, kube-scheduler and kube-proxy, until the
        node is Ready, untainted and advertises its GPUs."""
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        st = self.state
        if st.node:
            nodeio.preflight()
            # Built (or found) before anything starts: a cold build takes minutes, and a
            # missing Go should fail the start before the node's network exists.
            st.dns_binary = st.dns_binary or str(dns.ensure_dns_binary())
            nodeio.claim(self.node_paths)
            st.node_claimed = True
            try:
                st.sysctls = nodeio.network_up()
            except BaseException:
                nodeio.release(self.run_dir, Path(st.node_store), {})
                st.node_claimed = False
                raise
            nodeio.record(self.node_paths, os.getpid(), st.sysctls)
        write_pki(self.pki, st.host if st.node else None)
        token = secrets.token_hex(24)
        (self.run_dir / "admin.token").write_text(token)
        (self.run_dir / "admin.token").chmod(0o600)
        (self.run_dir / "tokens.csv").write_text(
            f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
        )
        (self.run_dir / "tokens.csv").chmod(0o600)
        st.etcd_port, st.etcd_peer_port = free_port(), free_port()
        st.apiserver_port, st.kcm_port = free_port(), free_port()
        self._write_kubeconfig(token)
        try:
            self._spawn("etcd", self._etcd_args(), die_with_parent)
            self._wait("etcd", timeout, self._etcd_healthy)
            self._spawn("kube-apiserver", self._apiserver_args(), die_with_parent)
            self._wait("kube-apiserver", timeout, self._apiserver_ready)
            self._spawn("kube-controller-manager", self._kcm_args(), die_with_parent)
            self._wait("kube-controller-manager", timeout, self._kcm_ready)
            if st.node:
                self._save()  # `down` from another shell can stop a node that failed half-way
                self._start_node(die_with_parent, timeout)
        except BaseException:
            self.stop()
            raise
        self._save()

    def stop(self, grace: float = 10.0) -> None:
        """Stop every component (newest first) and wait for them to exit."""
        for name in reversed(list(self.state.pids)):
            pid = self.state.pids[name]
            _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while nodeio.alive(pid) and time.monotonic() < deadline:
                self._reap(name)
                time.sleep(0.05)
            if nodeio.alive(pid):
                _signal(pid, signal.SIGKILL)
            self._reap(name, block=True)
        self.state.pids.clear()
        if self.state.node_claimed:
            nodeio.release(self.run_dir, Path(self.state.node_store), self.state.sysctls)
            self.state.node_claimed = False
        state_file = self.run_dir / "state.json"
        if state_file.exists():
            state_file.unlink()

    def running(self) -> dict[str, bool]:
        return {name: nodeio.alive(pid) for name, pid in self.state.pids.items()}

    # --- using it --------------------------------------------------------------------------------
    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 60, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run the testbed's kubectl as the admin. With `check`, a failure raises KubectlError
        with kubectl's message; without, the caller reads `returncode` and `stderr` (tests
        assert on them)."""
        done = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args[:2])}", done.stderr)
        return done

    def install_crds(self, crd_dir: Path, timeout_s: int = 60) -> None:
        """Apply the CRDs in `crd_dir` (server-side) and wait until the API server serves every
        one of them: objects of a kind created before its CRD is Established are refused."""
        for args in (
            ("apply", "--server-side", "-f", str(crd_dir)),
            ("wait", "--for=condition=Established", f"--timeout={timeout_s}s", "-f", str(crd_dir)),
        ):
            self.kubectl(*args, timeout=timeout_s + 30, check=True)

    # --- internals -----------------------------------------------------------------------------
    def _reap(self, name: str, block: bool = False) -> None:
        proc = self._procs.get(name)
        if proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5 if block else 0.001)

    def _save(self) -> None:
        (self.run_dir / "state.json").write_text(json.dumps(asdict(self.state), indent=2))

    def _write_kubeconfig(self, token: str) -> None:
        ca = (self.pki / "ca.crt").read_text()
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "testbed",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": base64.b64encode(ca.encode()).decode(),
                    },
                }
            ],
            "users": [{"name": ADMIN_USER, "user": {"token": token}}],
            "contexts": [
                {"name": "testbed", "context": {"cluster": "testbed", "user": ADMIN_USER}}
            ],
            "current-context": "testbed",
        }
        self.kubeconfig.write_text(yaml.safe_dump(doc))
        self.kubeconfig.chmod(0o600)

    def _spawn(
        self, name: str, args: list[str], die_with_parent: bool, exe: str | None = None
    ) -> None:
        log = self.log(name).open("ab")
        proc = subprocess.Popen(
            [exe or str(self.bin_dir / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=kill_when_parent_dies if die_with_parent else None,
        )
        log.close()
        self._procs[name] = proc
        self.state.pids[name] = proc.pid

    def _wait(self, name: str, timeout: float, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        last_error = "not ready"
        while time.monotonic() < deadline:
            proc = self._procs[name]
            if proc.poll() is not None:
                raise StartError(name, f"exited with code {proc.returncode}", self.log(name))
            try:
                if ready():
                    return
            except (
                OSError,
                urllib.error.URLError,
                ssl.SSLError,
                ValueError,
                subprocess.SubprocessError,
            ) as exc:
                last_error = str(exc)
            time.sleep(0.2)
        raise StartError(name, f"not ready after {timeout:.0f}s ({last_error})", self.log(name))

    def _etcd_args(self) -> list[str]:
        st = self.state
        client, peer = f"http://127.0.0.1:{st.etcd_port}", f"http://127.0.0.1:{st.etcd_peer_port}"
        return [
            "--name=testbed",
            f"--data-dir={self.run_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=testbed={peer}",
            "--listen-metrics-urls=",
            "--unsafe-no-fsync=true",  # a throwaway store: durability costs seconds per test run
            "--quota-backend-bytes=2147483648",
            "--log-level=warn",
        ]

    def _apiserver_args(self) -> list[str]:
        st, pki = self.state, self.pki
        return [
            f"--etcd-servers=http://127.0.0.1:{st.etcd_port}",
            f"--bind-address={st.host}",
            f"--advertise-address={st.host}",
            f"--secure-port={st.apiserver_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={self.run_dir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            f"--cert-dir={pki}",
            "--v=1",
            *(
                [
                    # `kubectl logs` and exec: the kubelet is reached at the node's InternalIP
                    # and accepts only this client cert.
                    "--kubelet-preferred-address-types=InternalIP",
                    f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                    f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                    # The aggregation layer, for APIs served by pods on the node (Kueue's
                    # visibility API): the API server proxies with the front-proxy cert, and
                    # the aggregated server trusts the X-Remote-* headers of that name only.
                    f"--requestheader-client-ca-file={pki / 'ca.crt'}",
                    "--requestheader-allowed-names=front-proxy-client",
                    "--requestheader-username-headers=X-Remote-User",
                    "--requestheader-group-headers=X-Remote-Group",
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                    f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                    f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                ]
                if st.node
                else []
            ),
        ]

    def _kcm_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            f"--controllers={','.join(self.controllers)}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.state.kcm_port}",
            f"--cert-dir={self.run_dir / 'kcm-certs'}",
            f"--root-ca-file={self.pki / 'ca.crt'}",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            "--use-service-account-credentials=false",
            "--v=1",
        ]

    @property
    def controllers(self) -> tuple[str, ...]:
        return CONTROLLERS + NODE_CONTROLLERS if self.state.node else CONTROLLERS

    # --- the node ------------------------------------------------------------------------------
    def _start_node(self, die_with_parent: bool, timeout: float) -> None:
        st, paths = self.state, self.node_paths
        ports = nc.KubeletPorts(api=free_port(), healthz=free_port())
        st.node_ports = {
            "kubelet": ports.api,
            "kubelet-healthz": ports.healthz,
            "scheduler": free_port(),
            "proxy-healthz": free_port(),
            "proxy-metrics": free_port(),
            "dns-ready": free_port(),
        }
        nodeio.write_configs(paths, self.pki, ports)
        self._spawn("containerd", nodeio.containerd_args(paths), die_with_parent, "containerd")
        self._wait("containerd", timeout, lambda: nodeio.containerd_ready(paths))
        # Before the kubelet: the first pod's resolv.conf already names a nameserver that
        # answers, and knows every Service that exists by then.
        corefile = self.run_dir / "Corefile"
        corefile.write_text(dns.corefile(self.kubeconfig, st.node_ports["dns-ready"]))
        self._spawn("coredns", dns.coredns_args(corefile), die_with_parent, st.dns_binary)
        self._wait("coredns", timeout, lambda: dns.dns_ready(st.node_ports["dns-ready"]))
        nodeio.import_image(
            paths, nodeio.pause_archive(Path(st.node_store) / "pause"), nc.PAUSE_IMAGE
        )
        self._spawn("kubelet", nc.kubelet_args(paths, self.kubeconfig), die_with_parent)
        self._spawn(
            "kube-scheduler",
            nc.scheduler_args(
                self.kubeconfig, st.node_ports["scheduler"], self.run_dir / "scheduler-certs"
            ),
            die_with_parent,
        )
        self._spawn(
            "kube-proxy",
            nc.proxy_args(
                self.kubeconfig, st.node_ports["proxy-healthz"], st.node_ports["proxy-metrics"]
            ),
            die_with_parent,
        )
        self._wait("kubelet", timeout, self._node_schedulable)
        self._wait("kube-scheduler", timeout, self._scheduler_ready)
        self._wait("kube-proxy", timeout, self._proxy_ready)
        self.advertise_gpus(nc.DEFAULT_GPUS)
        self._wait("kubelet", timeout, lambda: self._node_gpus() == nc.DEFAULT_GPUS)
        nodeio.record(paths, st.pids["kubelet"], st.sysctls)

    def bind_hostpath_claim(
        self, folder: Path, namespace: str, claim: str, size: str = "100Gi"
    ) -> None:
        """A PersistentVolume on `folder` of this machine, bound ahead to the claim
        `namespace/claim` (what a storage provisioner does on a real cluster; the testbed has
        none). Pods of the trainer (uid 10001) may write there: hostPath keeps the mode."""
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o1777)
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{namespace}-{claim}"},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": str(folder), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": claim},
                "persistentVolumeReclaimPolicy": "Retain",
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(volume), check=True)

    def advertise_gpus(self, count: int) -> None:
        """Advertise `count` GPUs as the node's extended resource (what a device plugin does on
        a GPU node): the chart's GPU templates then schedule here."""
        patch = {"status": {"capacity": {nc.GPU_RESOURCE: str(count)}}}
        self.kubectl(
            "patch", "node", nc.NODE_NAME, "--subresource=status", "--type=merge",
            "-p", json.dumps(patch), check=True,
        )  # fmt: skip

    def _node(self) -> dict[str, Any] | None:
        code, body = self._api_get(f"/api/v1/nodes/{nc.NODE_NAME}")
        return dict(json.loads(body)) if code == 200 else None

    def _node_schedulable(self) -> bool:
        node = self._node()
        if node is None:
            return False
        status, spec = node.get("status") or {}, node.get("spec") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        blocking = [t for t in spec.get("taints") or [] if t.get("effect") == "NoSchedule"]
        return ready and not blocking

    def _node_gpus(self) -> int:
        status = (self._node() or {}).get("status") or {}
        return int((status.get("allocatable") or {}).get(nc.GPU_RESOURCE, 0))

    def _scheduler_ready(self) -> bool:
        ctx = ssl._create_unverified_context()  # noqa: S323 - self-signed loopback cert
        url = f"https://127.0.0.1:{self.state.node_ports['scheduler']}/healthz"
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return bool(resp.status == 200)

    def _proxy_ready(self) -> bool:
        url = f"http://127.0.0.1:{self.state.node_ports['proxy-healthz']}/healthz"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)

    def _etcd_healthy(self) -> bool:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.state.etcd_port}/health", timeout=2
        ) as r:
            return bool(json.loads(r.read()).get("health") == "true")

    def _api_get(self, path: str) -> tuple[int, bytes]:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        req = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {self.admin_token()}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=3, context=ctx) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def _apiserver_ready(self) -> bool:
        return self._api_get("/readyz")[0] == 200

    def _kcm_ready(self) -> bool:
        # Healthy controllers are not enough: the service-account controller has created the
        # default namespace's ServiceAccount, without which the API refuses Job pods.
        ctx = ssl._create_unverified_context()  # noqa: S323 - the KCM's self-signed loopback cert
        url = f"https://127.0.0.1:{self.state.kcm_port}/healthz"
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            if resp.status != 200:
                return False
        return self._api_get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200


def _signal_when_parent_dies(sig: signal.Signals) -> None:
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, sig)


def term_when_parent_dies() -> None:
    """In the child (a `preexec_fn`): ask the kernel for SIGTERM when the parent dies, for
    processes whose own SIGTERM handling stops what they started (the demo's webhook, operator
    and pod runner), so that even a SIGKILLed demo leaves no process behind."""
    _signal_when_parent_dies(signal.SIGTERM)


def kill_when_parent_dies() -> None:
    """In the child (a `preexec_fn`): ask the kernel for SIGKILL when the parent dies.

    For the testbed's components: after a SIGKILLed pytest session every one of them gets the
    signal at once, and a SIGTERMed kube-apiserver whose etcd is gone too hangs in its graceful
    shutdown for good. They keep nothing that a kill could corrupt (etcd's data lives in the
    run's temporary folder; containerd and the kubelet are built to survive a crash), so the
    kill is safe; the orderly path is `stop()`, which still sends SIGTERM first.

    The kernel sends the signal when the *thread* that forked the child ends, so the control
    plane is started from a thread that lives as long as the process (pytest's main thread)."""
    _signal_when_parent_dies(signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
