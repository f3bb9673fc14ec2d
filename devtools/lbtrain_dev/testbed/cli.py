"""`lbtrain testbed`: a local Kubernetes control plane for development: up | down | env | status.

The control plane outlives the command: `up` leaves it running, `down` stops it. `up --node`
adds a real node (containerd, CoreDNS, kubelet, kube-scheduler, kube-proxy) that runs pods from
images imported with `lbtrain testbed import`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lbtrain_dev.testbed.binaries import ensure_binaries
from lbtrain_dev.testbed.controlplane import ControlPlane, StartError
from lbtrain_dev.testbed.node import NodeError, import_image


def default_node_store() -> Path:
    """The node's containerd root: imported images survive `down`, so a multi-GB trainer image
    is imported once per machine, not once per run."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("LBTRAIN_TESTBED_CACHE") or cache / "lbtrain-testbed") / "node"


def default_run_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(
        os.environ.get("LBTRAIN_TESTBED_DIR") or cache / "lbtrain-testbed" / "run" / "default"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbtrain testbed",
        description="A real local Kubernetes control plane (etcd, kube-apiserver, "
        "kube-controller-manager with the Job, garbage-collector, TTL and namespace controllers) "
        "on 127.0.0.1. Without --node there is no kubelet: pods stay Pending unless a fake "
        "kubelet or `lbtrain demo` runs them. With `up --node` (root; Debian's containerd, "
        "runc, CNI plugins and iptables, see testbed/node-deps.sh) a real node joins: the API "
        "server then listens on the node's bridge address 10.244.0.1, and pods run for real. "
        "The first `up` builds the binaries from Go modules (5 to 15 minutes on 2 cores); later "
        "starts take seconds.",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=default_run_dir(),
        help="run folder: state, logs, certificates, kubeconfig (default: %(default)s; "
        "env LBTRAIN_TESTBED_DIR)",
    )
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = sub.add_parser(
        "up", help="build if needed, start, wait for /readyz, print the kubeconfig path"
    )
    up.add_argument(
        "--node",
        action="store_true",
        help="also start a real node (containerd, CoreDNS, kubelet, kube-scheduler, kube-proxy)",
    )
    up.add_argument(
        "--node-store",
        type=Path,
        default=default_node_store(),
        help="the node's image store, kept across runs (default: %(default)s)",
    )
    imp = sub.add_parser(
        "import", help="import a docker/OCI image archive into the running node's containerd"
    )
    imp.add_argument("archive", type=Path, help="a `docker save` or OCI archive")
    imp.add_argument("ref", help="the image reference the archive holds (skip if present)")
    sub.add_parser("down", help="stop the control plane started by `up`")
    sub.add_parser(
        "env", help='print shell exports: KUBECONFIG and PATH (eval "$(lbtrain testbed env)")'
    )
    sub.add_parser("status", help="say whether each component runs")
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    run_dir: Path = args.dir
    running = (run_dir / "state.json").exists()
    if args.action == "up":
        if running and all(ControlPlane.load(run_dir).running().values()):
            print(ControlPlane.load(run_dir).kubeconfig)
            print("testbed: already running", file=sys.stderr)
            return 0
        bin_dir = ensure_binaries()
        plane = ControlPlane(bin_dir, run_dir, node_store=args.node_store if args.node else None)
        started = time.monotonic()
        try:
            plane.start()
        except (StartError, NodeError) as exc:
            print(exc, file=sys.stderr)
            return 1
        print(
            f"testbed: up in {time.monotonic() - started:.1f}s at {plane.server}", file=sys.stderr
        )
        print(plane.kubeconfig)
        return 0
    if not running:
        if args.action == "down":
            print("testbed: not running", file=sys.stderr)
            return 0
        print(
            f"testbed: not running (no {run_dir / 'state.json'}); "
            "start it with `lbtrain testbed up`",
            file=sys.stderr,
        )
        return 1
    plane = ControlPlane.load(run_dir)
    if args.action == "down":
        plane.stop()
        print("testbed: stopped", file=sys.stderr)
        return 0
    if args.action == "import":
        if not plane.state.node:
            print("testbed: no node runs (start one with `up --node`)", file=sys.stderr)
            return 1
        try:
            imported = import_image(plane.node_paths, args.archive, args.ref)
        except NodeError as exc:
            print(f"testbed: {exc}", file=sys.stderr)
            return 1
        print(f"testbed: {args.ref} {'imported' if imported else 'already present'}")
        return 0
    if args.action == "env":
        print(f"export KUBECONFIG={plane.kubeconfig}")
        print(f'export PATH={plane.bin_dir}:"$PATH"')
        return 0
    states = plane.running()
    for name, alive in states.items():
        print(f"{name:<24} {'running' if alive else 'STOPPED'}")
    print(f"server                   {plane.server}\nkubeconfig               {plane.kubeconfig}")
    return 0 if all(states.values()) else 1
