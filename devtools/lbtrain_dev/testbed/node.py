"""A real node for the testbed: containerd, runc and the CNI bridge on this machine, with a
kubelet, kube-scheduler and kube-proxy built from the same Kubernetes sources as the control
plane.

Pods then run for real, from images imported into the node's containerd: OOMKilled,
ImagePullBackOff, `kubectl logs` and ClusterIP Services are the cluster's own, not a
simulation. The configuration is in `nodeconfig.py`; this module does the I/O: it checks the
machine, sets up the bridge and its sysctls, writes the config files, imports images, and on
`down` removes everything it made (processes, mounts, the bridge, kube-proxy's chains), even
after a crash of whatever started it.

Only one node can run on a machine at a time (one bridge, one set of iptables chains); a marker
file in /run says which run folder holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from lbtrain_dev.testbed import nodeconfig as nc

MARKER = Path("/run/lbtrain-testbed-node.json")
SYSCTLS = {
    # Pod → Service → pod on the same bridge needs bridged packets to pass kube-proxy's rules,
    # and Service traffic to be routed back out of the bridge.
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
}
REQUIRED_TOOLS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "ip": "iproute2",
    "iptables": "iptables",
    "gcc": "gcc",
}
PAUSE_C = r"""
/* The testbed's pod sandbox: holds the pod's namespaces, reaps orphans, exits on a signal. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, quit); signal(SIGTERM, quit); signal(SIGCHLD, reap);
  for (;;) pause();
}
"""


class NodeError(RuntimeError):
    """The machine cannot host a node; says what is missing and how to get it."""


def preflight() -> None:
    """Refuse early, with the fix, when the machine lacks what a node needs."""
    if os.geteuid() != 0:
        raise NodeError("a real node needs root (containerd, the bridge, iptables)")
    missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if not shutil.which(tool)})
    if not (Path(nc.CNI_BIN_DIR) / "bridge").exists():
        missing.append("containernetworking-plugins")
    if missing:
        raise NodeError(
            "a real node needs these Debian packages: "
            + " ".join(missing)
            + " (install them with `bash testbed/node-deps.sh`)"
        )
    if not Path("/proc/sys/net/bridge").exists():
        raise NodeError("the kernel's br_netfilter module is not loaded (modprobe br_netfilter)")


def claim(paths: nc.NodePaths) -> None:
    """Mark this machine's one node as ours; clean up a dead predecessor's leftovers first."""
    if MARKER.exists():
        previous = json.loads(MARKER.read_text())
        pid = int(previous.get("pid", 0))
        if pid and alive(pid):
            raise NodeError(
                f"a testbed node already runs on this machine (run folder "
                f"{previous['run_dir']}); stop it first with "
                f"`lbtrain testbed --dir {previous['run_dir']} down`"
            )
        release(Path(previous["run_dir"]), Path(previous["store"]), previous.get("sysctls", {}))
    elif subprocess.run(["ip", "link", "show", nc.BRIDGE], capture_output=True).returncode == 0:
        raise NodeError(
            f"the bridge {nc.BRIDGE} exists but no testbed node claims it: remove it "
            f"(`ip link del {nc.BRIDGE}`) if nothing else uses it"
        )
    record(paths, os.getpid(), {})


def record(paths: nc.NodePaths, owner_pid: int, sysctls: dict[str, str]) -> None:
    """Write the marker: the run folder, the image store, the pid whose life means the node is
    in use (the starter while it starts, then the kubelet), and the sysctls to restore."""
    MARKER.write_text(
        json.dumps(
            {
                "run_dir": str(paths.run_dir),
                "store": str(paths.store),
                "pid": owner_pid,
                "sysctls": sysctls,
            }
        )
    )


def network_up() -> dict[str, str]:
    """Create the bridge with the node's address, route the Service range into it, and set the
    sysctls; returns the sysctls' earlier values, which `release` puts back."""
    _ip("link", "add", nc.BRIDGE, "type", "bridge")
    prefix = nc.POD_CIDR.split("/")[1]
    _ip("addr", "add", f"{nc.node_ip()}/{prefix}", "dev", nc.BRIDGE)
    _ip("link", "set", nc.BRIDGE, "up")
    # A ClusterIP that kube-proxy has no rule for goes to the bridge, never out of the machine.
    _ip("route", "add", nc.SERVICE_CIDR, "dev", nc.BRIDGE)
    before = {}
    for key, value in SYSCTLS.items():
        path = Path("/proc/sys") / key
        before[key] = path.read_text().strip()
        path.write_text(value)
    return before


def write_configs(paths: nc.NodePaths, pki: Path, ports: nc.KubeletPorts) -> None:
    for folder in (paths.containerd_state, paths.cni_conf_dir, paths.kubelet_root, paths.store):
        folder.mkdir(parents=True, exist_ok=True)
    paths.pod_logs.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.write_text(nc.containerd_config(paths))
    (paths.cni_conf_dir / "10-lbtrain.conflist").write_text(
        json.dumps(nc.cni_conflist(paths), indent=2)
    )
    paths.kubelet_config.write_text(yaml.safe_dump(nc.kubelet_config(paths, pki, ports)))


def trust_registry(paths: nc.NodePaths, host: str) -> Path:
    """Let the node's containerd pull from the plain-HTTP registry at `host` (read at each
    pull, so a running node picks it up)."""
    path = paths.registry_hosts / host / "hosts.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nc.registry_hosts_toml(host))
    return path


def containerd_args(paths: nc.NodePaths) -> list[str]:
    return [f"--config={paths.containerd_config}", "--log-level=warn"]


def ctr(paths: nc.NodePaths, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", f"--address={paths.containerd_socket}", "--namespace=k8s.io", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def containerd_ready(paths: nc.NodePaths) -> bool:
    return paths.containerd_socket.exists() and ctr(paths, "version", timeout=5).returncode == 0


def image_present(paths: nc.NodePaths, ref: str) -> bool:
    listed = ctr(paths, "images", "ls", "-q", timeout=30)
    return ref in listed.stdout.split()


def import_image(paths: nc.NodePaths, archive: Path, ref: str) -> bool:
    """Import a docker or OCI archive into the node unless `ref` is there; True if imported.

    Other tags of the same repository are removed first: the store outlives runs, and each
    trainer image is GBs (containerd collects their content and snapshots once untagged)."""
    if image_present(paths, ref):
        return False
    stale = stale_refs(_image_digests(paths), ref)
    if stale:
        ctr(paths, "images", "rm", *stale, timeout=120)
    done = ctr(paths, "images", "import", str(archive))
    if done.returncode != 0 or not image_present(paths, ref):
        raise NodeError(f"importing {archive} as {ref} failed: {done.stderr.strip()}")
    return True


def stale_refs(digests: dict[str, str], incoming: str) -> list[str]:
    """What to delete before importing `incoming`: the other tags of its repository, and the
    bare `sha256:` names (the runtime's image ids) whose image no tag names any more. Without
    them containerd keeps every old trainer image (GBs each) alive."""
    repository = incoming.rsplit(":", 1)[0]
    tags = {ref: digest for ref, digest in digests.items() if not ref.startswith("sha256:")}
    dropped = {ref for ref in tags if ref.rsplit(":", 1)[0] == repository and ref != incoming}
    kept = {digest for ref, digest in tags.items() if ref not in dropped}
    orphans = {
        ref for ref, digest in digests.items() if ref.startswith("sha256:") and digest not in kept
    }
    return sorted(dropped | orphans)


def _image_digests(paths: nc.NodePaths) -> dict[str, str]:
    """{image name: the digest it points at}, as `ctr images ls` lists them."""
    listed = ctr(paths, "images", "ls", timeout=30).stdout.splitlines()[1:]
    return {line.split()[0]: line.split()[2] for line in listed if len(line.split()) > 2}


def pause_archive(cache: Path) -> Path:
    """The sandbox image as a docker archive, built once from the C source above."""
    digest = hashlib.sha256(PAUSE_C.encode()).hexdigest()[:12]
    archive = cache / f"pause-{digest}.tar"
    if archive.exists():
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    source, binary = cache / "pause.c", cache / "pause"
    source.write_text(PAUSE_C)
    subprocess.run(
        ["gcc", "-static", "-Os", "-s", "-o", str(binary), str(source)],
        check=True,
        capture_output=True,
    )
    tmp = archive.with_suffix(".tmp")
    tmp.write_bytes(docker_archive(nc.PAUSE_IMAGE, {"pause": binary.read_bytes()}, ["/pause"]))
    tmp.rename(archive)
    return archive


def docker_archive(ref: str, files: dict[str, bytes], entrypoint: list[str]) -> bytes:
    """A one-layer image in `docker save` format (what `ctr images import` reads)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [ref], "Layers": ["layer/layer.tar"]}]
    ).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (
            ("layer/layer.tar", layer_bytes),
            (config_name, config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def release(run_dir: Path, store: Path, sysctls: dict[str, str]) -> None:
    """Remove everything a node made: container processes and their shims, mounts, kube-proxy's
    iptables chains, the bridge and its route, the sysctls. Safe to run twice or after a crash.
    (The node's own daemons are stopped by the control plane before this runs.)"""
    paths = nc.NodePaths(run_dir, store)
    socket = str(paths.containerd_socket)
    for pid in _pids_matching(socket):
        for child in [*_descendants(pid), pid]:
            _kill(child)
    deadline = time.monotonic() + 10
    while _pids_matching(socket) and time.monotonic() < deadline:
        time.sleep(0.1)
    unmount_under(paths.owned())
    proxy = _kube_proxy_binary(run_dir)
    if proxy:
        subprocess.run([proxy, "--cleanup"], capture_output=True, check=False, timeout=60)
    drop_kube_chains()
    with contextlib.suppress(subprocess.CalledProcessError):
        _ip("link", "del", nc.BRIDGE)
    for key, value in sysctls.items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / key).write_text(value)
    with contextlib.suppress(FileNotFoundError):
        MARKER.unlink()


def mounts_under(roots: tuple[Path, ...]) -> list[str]:
    """Mount points at or below any of `roots`, deepest first."""
    found = []
    resolved = [str(r.resolve()) for r in roots]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if any(point == r or point.startswith(r + "/") for r in resolved):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def unmount_under(roots: tuple[Path, ...]) -> None:
    for _ in range(3):  # a mount may be stacked on another at the same point
        points = mounts_under(roots)
        if not points:
            return
        for point in points:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


IPTABLES = ("iptables", "ip6tables")
TABLES = ("filter", "nat", "mangle")


def kube_rules(tool: str, table: str) -> list[str]:
    listed = subprocess.run([tool, "-t", table, "-S"], capture_output=True, text=True, check=False)
    return [line for line in listed.stdout.splitlines() if "KUBE-" in line]


def drop_kube_chains() -> None:
    """Remove the KUBE-* chains and the jumps to them: kube-proxy's `--cleanup` leaves the
    kubelet's own (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT) in place."""
    for tool in IPTABLES:
        for table in TABLES:
            rules = kube_rules(tool, table)
            chains = [line.split()[1] for line in rules if line.startswith("-N KUBE-")]
            for line in rules:
                parts = shlex.split(line)
                if parts[0] == "-A" and not parts[1].startswith("KUBE-"):
                    subprocess.run([tool, "-t", table, "-D", *parts[1:]], capture_output=True)
            for flag in ("-F", "-X"):
                for chain in chains:
                    subprocess.run([tool, "-t", table, flag, chain], capture_output=True)


@dataclass(frozen=True)
class Leftovers:
    """What a stopped node left behind (all empty after a clean `down`)."""

    processes: list[str]
    mounts: list[str]
    bridge: bool
    chains: list[str]

    def __bool__(self) -> bool:
        return bool(self.processes or self.mounts or self.bridge or self.chains)


def leftovers(run_dir: Path, store: Path) -> Leftovers:
    paths = nc.NodePaths(run_dir, store)
    procs = [
        f"{pid} {_cmdline(pid)[:80]}"
        for pid in _pids_matching(str(run_dir)) + _pids_matching(str(store))
    ]
    bridge = subprocess.run(["ip", "link", "show", nc.BRIDGE], capture_output=True).returncode == 0
    chains = [
        f"{tool} {table} {line.split()[1]}"
        for tool in IPTABLES
        for table in TABLES
        for line in kube_rules(tool, table)
        if line.startswith("-N ")
    ]
    return Leftovers(procs, mounts_under(paths.owned()), bridge, chains)


# --- helpers ---------------------------------------------------------------------------------
def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _kube_proxy_binary(run_dir: Path) -> str | None:
    state = run_dir / "state.json"
    if state.exists():
        candidate = Path(json.loads(state.read_text())["bin_dir"]) / "kube-proxy"
        if candidate.exists():
            return str(candidate)
    return shutil.which("kube-proxy")


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _pids_matching(needle: str) -> list[int]:
    me = os.getpid()
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and int(entry.name) != me and needle in _cmdline(int(entry.name))
    ]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Whether process `pid` exists (a zombie counts until reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
