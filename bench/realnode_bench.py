"""Real node: signed `POST /model_run` until the trainer's `train` container runs, vs a bare Job.

    .venv/bin/python bench/realnode_bench.py [--runs 20] [--rows 40] [--no-write]
    .venv/bin/python bench/realnode_bench.py --smoke   # no node: checks the bench still runs

Needs root and what `lbtrain testbed up --node` needs (containerd, runc, CNI plugins, iptables;
see testbed/node-deps.sh), the testbed binaries (`ensure_binaries`) and the two images
(`lbtrain_dev.images.ensure_images`, as `make images` builds them). It then:

1. starts a testbed control plane with a real node (containerd, kubelet, kube-scheduler,
   kube-proxy; the API server on the node's bridge, 10.244.0.1). Only one node runs per machine:
   if another one runs (the e2e suite), it waits for it, polling every 30 s up to
   `--node-wait-s`. Its node is up only for this run and stopped at the end;
2. imports both images into the node's containerd (nothing is ever pulled), starts a fake
   Labelbox on the bridge address (pods reach it there) and installs the chart with `helm
   install --wait`: the webhook and the operator run as the chart's pods, with the chart's
   defaults except the image references, the Labelbox endpoint and secrets, a hostPath
   PersistentVolume for the artifacts claim, and the CPU request of the text template (1, not
   4: the node has 2 cores), as tests/e2e/test_real_node.py installs it;
3. warms up: one run through the webhook (its Job is the model of the bare Jobs) and one bare
   Job, neither counted;
4. measures `--runs` pairs, the order inside a pair alternating:

   - **webhook**: a signed `POST /model_run` (modelType text_single_classification, a fresh
     modelRunId seeded in the fake Labelbox with `--rows` text rows) sent from this machine to
     the webhook's Service ClusterIP (kube-proxy's rules, as a client in the cluster would
     reach it); the webhook creates the ModelRun, the operator its Job, the Job controller the
     pod, the scheduler binds it, the kubelet runs the `export` and `prepare` init containers
     (they really run and talk to the fake Labelbox) and then starts `train`;
   - **bare Job**: a `batch/v1` Job created directly with the API by the same client, with the
     warm-up Job's spec and pod template (same image, containers, env, volumes, resources,
     security context), its modelRunId replaced by a fresh seeded one, and the operator's
     labels and owner reference removed, so the operator never sees it.

   The clock starts just before the POST / the create and stops when a watch (pods, in the
   release namespace, opened before the runs) shows the pod's `train` container `running`.
   Watches on ModelRuns, Jobs and pods time the phases in between, all on this machine's
   monotonic clock when the event arrives: POST answered, ModelRun seen, Job seen, pod seen,
   pod bound (spec.nodeName), `export` running, `prepare` running, `train` running. Between
   runs everything is deleted (the ModelRun, whose finalizer lets the operator delete the Job;
   or the bare Job) and the pod is deleted with a 1 s grace period (the trainer runs as PID 1
   and would otherwise sit out the 30 s default), and the next run starts only once the pod
   is gone: runs never overlap.

It prints p50 / p99 / mean of each kind and the ratios (webhook / bare Job), the per-phase medians,
and writes the summary into the `## real node` section of bench/README.md (`--no-write`: print
only). Network traffic: 127.0.0.1 and the testbed's addresses only (10.244.0.0/24 and
ClusterIPs in 10.0.0.0/24). Every loop is bounded in count and time (`--run-timeout-s` per run,
`--max-minutes` for the measured pairs: past it, no new pair starts and the figures cover the
pairs done).

`--smoke` checks that the bench still runs where there is no node, no root and no image (as in
`make test`): one warm-up and one pair of a few rows, on a control plane without a node, with
`lbtrain webhook` and `lbtrain operator` as local processes instead of the chart's pods and
`FakeKubelet` in the node's place (it binds each pod, reports `export`, `prepare` and `train`
running, and finishes deletions). Everything from the signed POST to the summary is the code a
real run goes through; its times mean nothing and nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*`, as mypy sees it
from bench.lib.machine import cpu_model, memory_gib, nproc, revision, utc_now
from bench.lib.readme import write_block
from bench.realnode.figures import BARE, WEBHOOK, summarise
from bench.realnode.runs import API_KEY, MODEL_TYPE, NAMESPACE, WEBHOOK_SECRET, Bench, log
from bench.realnode.smoke import smoke_cluster, smoke_node
from bench.realnode.watch import Run, watch_forever
from lbtrain import contract
from lbtrain.kube import (
    JOBS,
    MODELRUNS,
    PODS,
    ApiError,
    ApiUnreachable,
    KubeClient,
    load_config,
)
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed import nodeconfig as nc
from lbtrain_dev.testbed.binaries import ensure_binaries
from lbtrain_dev.testbed.cli import default_node_store
from lbtrain_dev.testbed.node import MARKER, NodeError, import_image, leftovers

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "lbtrain"
TEMPLATE_KEY = "text-single-classification"
SMOKE = {"runs": 1, "rows": 8, "no_write": True, "run_timeout_s": 60.0, "max_failures": 0}
SMOKE_TEMPLATE = {  # what the chart installs for the model type, as far as --smoke needs it
    "metadata": {"name": TEMPLATE_KEY},
    "spec": {"modelType": MODEL_TYPE, "image": "trainer:smoke"},
}


# --- the node, the images, the chart -------------------------------------------------------------
def start_node(bin_dir: Path, wait_s: float) -> tuple[ControlPlane, Path]:
    """A control plane with a real node; waits (bounded) while another testbed node runs."""
    deadline = time.monotonic() + wait_s
    while True:
        run_dir = Path(tempfile.mkdtemp(prefix="lbtrain-realnode-bench-"))
        plane = ControlPlane(bin_dir, run_dir, node_store=default_node_store())
        try:
            plane.start(die_with_parent=True, timeout=180)
            return plane, run_dir
        except NodeError as exc:
            shutil.rmtree(run_dir, ignore_errors=True)
            if "already runs" not in str(exc) or time.monotonic() > deadline:
                raise
            log(f"another testbed node runs; retrying in 30 s ({exc})")
            time.sleep(30)


def helm(plane: ControlPlane, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The testbed's helm with private config/cache folders, on the testbed's kubeconfig."""
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
        "NO_PROXY": "127.0.0.1,localhost,10.244.0.1",
    }
    cmd = [str(plane.bin_dir / "helm"), *args, f"--kubeconfig={plane.kubeconfig}"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400, check=False)


def install_chart(
    plane: ControlPlane, labelbox: FakeLabelbox, lbtrain_ref: str, trainer_ref: str, work: Path
) -> None:
    kubectl = plane.kubectl
    kubectl("create", "namespace", NAMESPACE, check=True)
    plane.bind_hostpath_claim(work / "artifacts", NAMESPACE, "lbtrain-artifacts")
    repo, tag = lbtrain_ref.rsplit(":", 1)
    trepo, ttag = trainer_ref.rsplit(":", 1)
    values: dict[str, Any] = {
        "image.repository": repo,
        "image.tag": tag,
        "trainingTemplates.defaults.image.repository": trepo,
        "trainingTemplates.defaults.image.tag": ttag,
        "labelbox.endpoint": labelbox.endpoint,
        "labelbox.restEndpoint": labelbox.rest_endpoint,
        "labelbox.apiKey": API_KEY,
        "webhook.secret.value": WEBHOOK_SECRET,
        # The testbed has no provisioner for the default per-run claims: one shared claim,
        # bound above (ReadWriteOnce serves every run on one node).
        "artifacts.persistentVolumeClaim.create": True,
        "artifacts.persistentVolumeClaim.accessModes": ["ReadWriteOnce"],
        # The one change for this 2-core node: the trained template asks for 1 CPU, not 4.
        f"trainingTemplates.templates.{TEMPLATE_KEY}.resources": {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"memory": "4Gi"},
        },
    }
    sets = [f"--set-json={key}={json.dumps(value)}" for key, value in values.items()]
    home = work / "helm"
    started = time.monotonic()
    done = helm(
        plane, home, "install", "lbtrain", str(CHART), f"--namespace={NAMESPACE}", "--wait",
        "--timeout=5m", *sets,
    )  # fmt: skip
    if done.returncode != 0:
        print(kubectl("get", "pods", "-A", "-o", "wide").stdout)
        print(kubectl("describe", "pods", "-n", NAMESPACE).stdout[-6000:])
        raise RuntimeError(f"helm install failed: {done.stderr}")
    log(f"chart installed and ready in {time.monotonic() - started:.1f}s")


def service_url(plane: ControlPlane) -> str:
    done = plane.kubectl(
        "get", "service", "lbtrain-webhook", "-n", NAMESPACE,
        "-o", "jsonpath={.spec.clusterIP}:{.spec.ports[0].port}", check=True,
    )  # fmt: skip
    return f"http://{done.stdout.strip()}"


def node_taken_over(plane: ControlPlane) -> str | None:
    """The run folder of another node that claimed this machine's one node (its bridge,
    routes and kube-proxy chains) since ours started; None while the claim is still ours."""
    try:
        claimed = json.loads(MARKER.read_text()).get("run_dir", "")
    except (OSError, ValueError):
        return "(no claim on the node left)"
    return None if Path(claimed) == plane.run_dir else str(claimed)


async def measure(
    plane: ControlPlane, labelbox: FakeLabelbox, args: argparse.Namespace, url: str
) -> tuple[dict[str, list[Run]], list[str]]:
    async with KubeClient(load_config(str(plane.kubeconfig))) as kube:
        bench = Bench(kube, labelbox, url, args)
        watches = [
            asyncio.create_task(watch_forever(kube, res, NAMESPACE, bench.recorder))
            for res in (MODELRUNS, JOBS, PODS)
        ]
        if args.smoke:
            stages = (contract.STAGE_EXPORT, contract.STAGE_PREPARE, contract.STAGE_TRAIN)
            watches.append(asyncio.create_task(smoke_node(kube, NAMESPACE, stages)))
        results: dict[str, list[Run]] = {WEBHOOK: [], BARE: []}
        failures: list[str] = []
        try:
            await asyncio.sleep(1)  # the watches are open
            for kind, go in ((WEBHOOK, bench.webhook_run), (BARE, bench.bare_run)):
                run = await go()
                log(f"warm-up {kind}: {run.total:.2f}s")
            deadline = time.monotonic() + args.max_minutes * 60
            order = (bench.webhook_run, bench.bare_run)
            for attempt in range(args.runs + args.max_failures):
                done = len(results[WEBHOOK])
                if done >= args.runs:
                    break
                if time.monotonic() > deadline:
                    log(f"--max-minutes reached: {done} pairs measured of {args.runs}")
                    break
                if not args.smoke and (intruder := node_taken_over(plane)) is not None:
                    failures.append(
                        f"another testbed node took this machine's node over: {intruder}"
                    )
                    log(f"stopping: {failures[-1]}")
                    break
                pair: list[Run] = []
                try:
                    for go in order if attempt % 2 == 0 else order[::-1]:
                        pair.append(await go())
                except (RuntimeError, ApiError, ApiUnreachable, aiohttp.ClientError) as exc:
                    # The pair is dropped whole; everything of it is deleted before going on.
                    failures.append(f"{type(exc).__name__}: {exc}")
                    log(f"pair failed ({len(failures)}/{args.max_failures} allowed): {exc}")
                    if len(failures) > args.max_failures:
                        break
                    await bench.sweep()
                    continue
                for run in pair:
                    results[run.kind].append(run)
                w, b = results[WEBHOOK][-1], results[BARE][-1]
                log(
                    f"pair {done + 1}/{args.runs}: webhook {w.total:.2f}s, bare Job {b.total:.2f}s "
                    f"(cleanup: webhook {w.cleanup_note}; bare {b.cleanup_note})"
                )
        finally:
            for task in watches:
                task.cancel()
            await asyncio.gather(*watches, return_exceptions=True)
            await bench.close()
        return results, failures


# --- figures -------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    return {
        "nproc": str(nproc()),
        "mem_gib": f"{memory_gib():.0f}",
        "cpu": cpu_model(),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "commit": revision(),
        "date": utc_now(),
        "load": f"{os.getloadavg()[0]:.1f}",
    }


# --- main ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def node(args: argparse.Namespace) -> Iterator[ControlPlane]:
    bin_dir = ensure_binaries()
    plane, run_dir = start_node(bin_dir, args.node_wait_s)
    failed = True
    try:
        yield plane
        failed = False
    finally:
        if failed or args.keep_logs:  # the control plane's and the node's logs, for a post-mortem
            kept = Path(tempfile.mkdtemp(prefix="lbtrain-realnode-bench-logs-"))
            with contextlib.suppress(OSError):
                shutil.copytree(run_dir / "logs", kept / "logs")
            log(f"testbed logs kept in {kept}")
        plane.stop()
        left = leftovers(run_dir, default_node_store())
        if left:
            log(f"warning: testbed down left behind: {left}")
        shutil.rmtree(run_dir, ignore_errors=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--runs",
        type=int,
        default=20,
        help="measured runs of each kind (pairs; default %(default)s)",
    )
    p.add_argument(
        "--rows",
        type=int,
        default=40,
        help="text rows seeded per run in the fake Labelbox (default %(default)s)",
    )
    p.add_argument(
        "--run-timeout-s", type=float, default=300.0,
        help="longest wait for one run's `train` container (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--cleanup-timeout-s", type=float, default=120.0,
        help="longest wait for one run's objects to go (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--max-minutes", type=float, default=60.0,
        help="no new pair starts after this many minutes of measuring (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--node-wait-s", type=float, default=1200.0,
        help="longest wait for another testbed node on this machine to stop (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--max-failures", type=int, default=3,
        help="failed pairs (dropped whole, everything deleted) before giving up (default "
        "%(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--keep-logs", action="store_true",
        help="keep the testbed's logs (always kept when the run fails)",
    )  # fmt: skip
    p.add_argument(
        "--no-write", action="store_true", help="print only; leave bench/README.md alone"
    )
    p.add_argument(
        "--smoke", action="store_true",
        help=f"no node, no images: {SMOKE}, the node stood in for (see above)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    if args.runs < 1 or args.rows < 1:
        p.error("--runs and --rows must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    load_before = f"{os.getloadavg()[0]:.1f}"
    if args.smoke:
        with (
            tempfile.TemporaryDirectory(prefix="lbtrain-bench-") as tmp,
            smoke_cluster(NAMESPACE, SMOKE_TEMPLATE, WEBHOOK_SECRET, Path(tmp)) as cluster,
        ):
            plane, labelbox, url = cluster
            results, failures = asyncio.run(measure(plane, labelbox, args, url))
        return finish(results, failures, args, argv, load_before, "none (--smoke)")
    from lbtrain_dev.images import ensure_images

    log("images: building or finding them (ensure_images)")
    images = ensure_images()
    with node(args) as plane, tempfile.TemporaryDirectory(prefix="lbtrain-bench-") as tmp:
        log(f"node up; API server {plane.server}")
        for image in (images.lbtrain, images.trainer):
            started = time.monotonic()
            imported = import_image(plane.node_paths, image.archive, image.ref)
            took = time.monotonic() - started
            log(f"{image.ref}: {'imported' if imported else 'present'} ({took:.1f}s)")
        with FakeLabelbox.in_thread(api_key=API_KEY, host=nc.node_ip()) as labelbox:
            install_chart(plane, labelbox, images.lbtrain.ref, images.trainer.ref, Path(tmp))
            url = service_url(plane)
            results, failures = asyncio.run(measure(plane, labelbox, args, url))
    refs = f"{images.lbtrain.ref}`, `{images.trainer.ref}"
    return finish(results, failures, args, argv, load_before, refs)


def finish(
    results: dict[str, list[Run]],
    failures: list[str],
    args: argparse.Namespace,
    argv: list[str],
    load_before: str,
    images: str,
) -> int:
    """Print the summary, write it (unless `--no-write`) and answer the exit status."""
    if not results[WEBHOOK] or not results[BARE]:
        log(f"no pair measured; failures: {failures}")
        return 1
    info = {"load_before": load_before, **machine(), "images": images}
    info["command"] = ".venv/bin/python bench/realnode_bench.py" + "".join(f" {a}" for a in argv)
    text = summarise(results, failures, info, args)
    print("\n" + text + "\n")
    print(f"realnode_bench: {len(results[WEBHOOK])} pairs measured, {len(failures)} failed")
    if not args.no_write:
        write_block("realnode_bench.py", text, "## real node")
        log("written to bench/README.md")
    return 0 if len(results[WEBHOOK]) == args.runs else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
