"""The real node's cluster DNS: CoreDNS as a host process on the bridge address, port 53.

Pods find each other by name on a real cluster: a Service as `<svc>` (or
`<svc>.<ns>.svc.cluster.local`), and each pod of an Indexed Job with `subdomain: <svc>` as
`<job>-<index>.<svc>`, which is how a multi-pod training run's ranks reach rank 0. Without a
cluster DNS the kubelet gives every pod an empty resolv.conf and a `MissingClusterDNS` warning.

CoreDNS (built by testbed/build-dns.sh with only the plugins named below) watches Services,
EndpointSlices and Namespaces through the testbed's admin kubeconfig, the way it would from
outside any cluster. It is not a Deployment behind a `kube-dns` Service: the kubelet's
`clusterDNS` is only the nameserver written into each pod's resolv.conf, and the bridge address
is one every pod already routes to, so a host process needs no image, no Service and no RBAC.
It starts with every real node: it is one host process, ready once its watches have listed, and
a node whose pods cannot resolve names is not the cluster the chart is written for.

It answers `cluster.local` and the reverse zones only. There is no upstream to forward to (no
traffic leaves the testbed), so any other name is refused at once instead of timing out.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from lbtrain_dev.source import run_build_script
from lbtrain_dev.testbed import nodeconfig as nc

DNS_PORT = 53  # a pod's resolv.conf has no port: the nameserver must listen on 53
ZONES = (nc.CLUSTER_DOMAIN, "in-addr.arpa", "ip6.arpa")


def ensure_dns_binary(*, quiet: bool = False) -> Path:
    """The CoreDNS binary; builds it on first use (a cold build takes 2 to 4 min on 2 cores).

    ``LBTRAIN_TESTBED_DNS_BIN`` names a ready binary and skips the build.
    """
    override = os.environ.get("LBTRAIN_TESTBED_DNS_BIN")
    if override:
        if not Path(override).is_file():
            raise FileNotFoundError(f"LBTRAIN_TESTBED_DNS_BIN={override} is not a file")
        return Path(override)
    return Path(run_build_script("testbed/build-dns.sh", quiet=quiet).strip().splitlines()[-1])


def corefile(
    kubeconfig: Path, ready_port: int, *, host: str | None = None, port: int = DNS_PORT
) -> str:
    """The Corefile: one server on the bridge address (or `host`) for the cluster's zones.

    - `bind`: the bridge address only, never the machine's own interfaces. (A test without a
      node passes 127.0.0.1 and a free port.)
    - `kubernetes ... { kubeconfig }`: records from the API server, reached from outside the
      cluster with the admin's credentials; no `fallthrough`, since nothing follows it (a miss
      is NXDOMAIN, as on a real cluster).
    - `ready`: 200 on 127.0.0.1:<ready_port>/ready once the records are synced, which is what
      the node's start waits for.
    - `errors` and `log`: every query and failure in the run folder's logs/coredns.log, so a
      test that could not resolve a name can show what was asked and answered.
    """
    zones = " ".join(ZONES)
    servers = " ".join(f"{zone}:{port}" for zone in ZONES)
    return f"""{servers} {{
    bind {host or nc.node_ip()}
    errors
    log
    ready 127.0.0.1:{ready_port}
    kubernetes {zones} {{
        kubeconfig {kubeconfig}
    }}
}}
"""


def coredns_args(corefile_path: Path) -> list[str]:
    return ["-conf", str(corefile_path)]


def dns_ready(ready_port: int) -> bool:
    """Whether CoreDNS listens and its kubernetes plugin has synced (urllib raises otherwise)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{ready_port}/ready", timeout=2) as resp:
        return bool(resp.status == 200)
