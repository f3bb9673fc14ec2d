"""What a real testbed node is configured with: pure builders of containerd's, the CNI's, the
kubelet's, the scheduler's and kube-proxy's settings.

Every choice that this sandbox forces (see docs/testbed.md) is made here, once, with its
reason beside it, so that `node.py` only writes files and starts processes. Nothing here touches
the machine, so the whole configuration is unit-tested.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_NAME = "lbtrain-node"
BRIDGE = "lbt0"
# The pods' subnet; its first address is the bridge's, on the host. The API server, the kubelet
# and the fake Labelbox listen there, because a pod's 127.0.0.1 is its own loopback.
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.0.0.0/24"  # the control plane's --service-cluster-ip-range
# The pods' DNS domain; the names under it are served by CoreDNS on the bridge address (dns.py).
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "localhost/lbtrain-pause:1"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
# A GPU node as a device plugin alone makes one: the GPU advertised as an extended resource (no
# device plugin here, so the trainer falls back to the CPU) and no GPU label at all. NVIDIA's GPU
# Feature Discovery would add nvidia.com/gpu.present=true; the chart's default templates must not
# need it, and a node without it proves they do not.
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GPUS = 4


def node_ip() -> str:
    """The bridge's address: the node's InternalIP and the API server's advertise address."""
    return str(next(ipaddress.ip_network(POD_CIDR).hosts()))


@dataclass(frozen=True)
class NodePaths:
    """Where a node keeps what: state per run, the image store across runs."""

    run_dir: Path
    store: Path  # containerd's root: imported images survive `down` (a trainer image is GBs)

    @property
    def containerd_state(self) -> Path:
        return self.run_dir / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_state / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        return self.containerd_state / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.run_dir / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.run_dir / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.run_dir / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.run_dir / "pod-logs"

    @property
    def containerd_config(self) -> Path:
        return self.run_dir / "containerd.toml"

    @property
    def kubelet_config(self) -> Path:
        return self.run_dir / "kubelet.yaml"

    @property
    def registry_hosts(self) -> Path:
        """containerd's `config_path`: one folder per registry host:port, holding hosts.toml."""
        return self.run_dir / "registry-hosts"

    def owned(self) -> tuple[Path, ...]:
        """Folders under which every mount is the node's own (swept by `down`)."""
        return (self.containerd_state, self.kubelet_root, self.store)


def containerd_config(paths: NodePaths) -> str:
    """containerd's config.toml (version 2): private root, state, socket and CNI folders."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = {json.dumps(str(paths.store))}
state = {json.dumps(str(paths.containerd_state))}
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing"]

[grpc]
  address = {json.dumps(str(paths.containerd_socket))}

[ttrpc]
  address = {json.dumps(str(paths.containerd_state / "ttrpc.sock"))}

[{cri}]
  # A local name: the sandbox image is imported, never pulled.
  sandbox_image = "{PAUSE_IMAGE}"
  # The sandbox lacks CAP_SYS_RESOURCE, so runc may not lower a container's OOM score.
  restrict_oom_score_adj = true
  # Network namespaces are mounted under the state folder, so `down` finds and unmounts them.
  netns_mounts_under_state_dir = true
  enable_cdi = false

[{cri}.registry]
  # Per-registry settings (hosts.toml), read at each pull: the testbed's registry on loopback
  # speaks plain HTTP (see registry_hosts_toml).
  config_path = {json.dumps(str(paths.registry_hosts))}

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = {json.dumps(str(paths.cni_conf_dir))}

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  # runc's own state beside containerd's, not in the machine-wide /run/containerd/runc.
  Root = {json.dumps(str(paths.runc_root))}
  SystemdCgroup = false
"""


def registry_hosts_toml(host: str) -> str:
    """containerd's hosts.toml for a registry at `host` (127.0.0.1:<port>) that speaks plain
    HTTP: pulls and resolves go there, and nowhere else (no fallback to another mirror)."""
    if not host.startswith(("127.0.0.1:", "localhost:")):
        raise ValueError(f"the testbed trusts only a registry on loopback over HTTP, not {host}")
    return f"""server = "http://{host}"

[host."http://{host}"]
  capabilities = ["pull", "resolve"]
"""


def cni_conflist(paths: NodePaths) -> dict[str, Any]:
    """The pod network: one bridge, host-local addresses, and routes only to the pods' and the
    Services' ranges, so a pod has no route anywhere else (no traffic leaves the testbed)."""
    gateway = node_ip()
    return {
        "cniVersion": "0.4.0",
        "name": "lbtrain-testbed",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": gateway}]],
                    "routes": [{"dst": SERVICE_CIDR}],
                    "dataDir": str(paths.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


@dataclass(frozen=True)
class KubeletPorts:
    api: int
    healthz: int


def kubelet_config(paths: NodePaths, pki: Path, ports: KubeletPorts) -> dict[str, Any]:
    """The KubeletConfiguration: what a kubelet needs on cgroup v1, in a VM sandbox, with no
    systemd and no swap policy, and an API that only the API server may use."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node_ip(),
        "port": ports.api,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.healthz,
        "tlsCertFile": str(pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        # Only a client cert signed by the testbed's CA (the API server's) may call the kubelet.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "podLogsDir": str(paths.pod_logs),
        # This machine has cgroup v1 hierarchies and no systemd; Kubernetes 1.35 refuses
        # cgroup v1 unless told otherwise.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        # No eviction and no image garbage collection: a test machine's disk fills with the
        # cached trainer image, and evicting it mid-suite would only slow the tests down.
        "evictionHard": {},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # A ClusterFirst pod's resolv.conf names only the testbed's CoreDNS on the bridge
        # address (dns.py) with the cluster's search domains; the machine's own resolv.conf is
        # not merged in, so no name is resolved outside the testbed.
        "clusterDNS": [node_ip()],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "",
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "4s",
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "0s",
        "staticPodPath": "",
        "shutdownGracePeriod": "0s",
        "maxPods": 60,
    }


def kubelet_args(paths: NodePaths, kubeconfig: Path) -> list[str]:
    return [
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={node_ip()}",
        f"--root-dir={paths.kubelet_root}",
        "--v=1",
    ]


def scheduler_args(kubeconfig: Path, port: int, cert_dir: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
        "--v=1",
    ]


def proxy_args(kubeconfig: Path, healthz_port: int, metrics_port: int) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={NODE_NAME}",
        "--proxy-mode=iptables",
        f"--cluster-cidr={POD_CIDR}",
        f"--healthz-bind-address=127.0.0.1:{healthz_port}",
        f"--metrics-bind-address=127.0.0.1:{metrics_port}",
        # NodePorts only on the bridge's address, never on the machine's own interfaces.
        f"--nodeport-addresses={node_ip()}/32",
        # Leave the machine's conntrack table size alone (the sandbox may not change it).
        "--conntrack-max-per-core=0",
        "--iptables-localhost-nodeports=false",
        "--v=1",
    ]
