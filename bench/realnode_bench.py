"""Real node: signed `POST /model_run` until the trainer's `train` container runs, vs a bare Job.

    .venv/bin/python bench/realnode_bench.py [--runs 20] [--rows 40] [--no-write]

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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import itertools
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*`, as mypy sees it
from bench.lib.machine import cpu_model, memory_gib, nproc, revision, utc_now
from bench.lib.readme import write_block
from bench.lib.signing import signed_headers
from bench.lib.stats import percentile
from lbtrain import contract
from lbtrain.kube import (
    JOBS,
    MODELRUNS,
    PODS,
    ApiError,
    ApiUnreachable,
    KubeClient,
    NotFound,
    Resource,
    load_config,
)
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed import nodeconfig as nc
from lbtrain_dev.testbed.binaries import ensure_binaries
from lbtrain_dev.testbed.cli import default_node_store
from lbtrain_dev.testbed.node import MARKER, NodeError, import_image, leftovers

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "lbtrain"
NAMESPACE = "lbtrain-bench"
API_KEY = "bench-key-not-a-secret"
WEBHOOK_SECRET = "bench-webhook-secret-" + secrets.token_hex(8)
MODEL_TYPE = "text_single_classification"
TEMPLATE_KEY = "text-single-classification"
ANNOTATION_RUN_ID = "lbtrain.io/model-run-id"  # on the operator's Job and pod template
BENCH_LABEL = "bench.lbtrain.io/kind"
# Labels that the operator or the Job controller own: not copied onto the bare Job.
OWNED_LABEL = re.compile(
    r"^(lbtrain\.io/|app\.kubernetes\.io/managed-by$|batch\.kubernetes\.io/|controller-uid$|"
    r"job-name$)"
)
WEBHOOK, BARE = "webhook", "bare Job"
# Marks in the order they happen; the phases are the gaps between consecutive ones.
MARKS = {
    WEBHOOK: ("post", "answered", "modelrun", "job", "pod", "bound", "export", "prepare", "train"),
    BARE: ("post", "job", "pod", "bound", "export", "prepare", "train"),
}
MARK_TEXT = {
    "post": "request sent",
    "answered": "POST answered (201)",
    "modelrun": "ModelRun seen",
    "job": "Job seen",
    "pod": "pod seen",
    "bound": "pod bound",
    "export": "`export` running",
    "prepare": "`prepare` running",
    "train": "`train` running",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


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


# --- what the watches see ----------------------------------------------------------------------
@dataclass
class Run:
    kind: str
    run_id: str
    marks: dict[str, float] = field(default_factory=dict)
    failure: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    pod: str | None = None
    cleanup_s: float = 0.0
    cleanup_note: str = ""

    def mark(self, name: str, now: float) -> None:
        self.marks.setdefault(name, now)

    @property
    def total(self) -> float:
        return self.marks["train"] - self.marks["post"]


def _started(statuses: list[dict[str, Any]], name: str) -> bool:
    """The container runs or has run (an init container may finish between two status reports)."""
    for status in statuses:
        if status.get("name") == name:
            state = status.get("state") or {}
            return "running" in state or "terminated" in state
    return False


def _pod_failure(pod: dict[str, Any]) -> str | None:
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return f"pod failed: {status.get('reason')} {status.get('message')}"
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        term = state.get("terminated")
        if term and term.get("exitCode"):
            return f"container {cs['name']} exited {term['exitCode']}: {term.get('message', '')}"
        waiting = (state.get("waiting") or {}).get("reason", "")
        if waiting in ("ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError"):
            return f"container {cs['name']} waits: {waiting}"
    return None


class Recorder:
    """Timestamps, on this machine's monotonic clock, the first watch event of each mark."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}  # by modelRunId

    def observe(self, res: Resource, obj: dict[str, Any], now: float) -> None:
        meta = obj.get("metadata") or {}
        if res is MODELRUNS:
            run = self.runs.get((obj.get("spec") or {}).get("modelRunId", ""))
            if run:
                run.mark("modelrun", now)
            return
        run = self.runs.get((meta.get("annotations") or {}).get(ANNOTATION_RUN_ID, ""))
        if run is None:
            return
        if res is JOBS:
            run.mark("job", now)
            return
        run.pod = meta.get("name")
        run.mark("pod", now)
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        if spec.get("nodeName"):
            run.mark("bound", now)
        inits = status.get("initContainerStatuses") or []
        for stage in (contract.STAGE_EXPORT, contract.STAGE_PREPARE):
            if _started(inits, stage):
                run.mark(stage, now)
        for cs in status.get("containerStatuses") or []:
            if cs.get("name") == contract.STAGE_TRAIN and "running" in (cs.get("state") or {}):
                run.mark("train", now)
                run.done.set()
        failure = _pod_failure(obj)
        if failure and not run.done.is_set():
            run.failure = failure
            run.done.set()


async def watch_forever(kube: KubeClient, res: Resource, recorder: Recorder) -> None:
    """Feed every event of `res` in the namespace to the recorder until cancelled; re-lists on
    410 Gone and reconnects (at most 1,000 times) when a watch ends."""
    version: str | None = None
    for _ in range(1000):
        try:
            if version is None:
                listed = await kube.list(res, NAMESPACE)
                now = time.monotonic()
                for item in listed.get("items") or []:
                    recorder.observe(res, item, now)
                version = listed["metadata"]["resourceVersion"]
            async for event in kube.watch(
                res, NAMESPACE, resource_version=version, timeout_seconds=240
            ):
                if event.type == "BOOKMARK":
                    version = event.object["metadata"]["resourceVersion"]
                    continue
                recorder.observe(res, event.object, time.monotonic())
                version = event.object["metadata"].get("resourceVersion", version)
        except ApiError as exc:
            if exc.status == 410:
                version = None
            else:
                await asyncio.sleep(1)
        except ApiUnreachable:
            await asyncio.sleep(1)
    raise RuntimeError(f"the {res.plural} watch ended 1,000 times")


# --- one run of each kind -------------------------------------------------------------------------
class Bench:
    def __init__(
        self, kube: KubeClient, labelbox: FakeLabelbox, url: str, args: argparse.Namespace
    ) -> None:
        self.kube, self.labelbox, self.url, self.args = kube, labelbox, url, args
        self.recorder = Recorder()
        self.model: dict[str, Any] | None = None  # the warm-up Job's spec, for bare Jobs
        self.model_run_id = ""
        self.http = aiohttp.ClientSession()
        self.count = 0

    def seed(self, kind: str) -> Run:
        from lbtrain_trainer.synthetic import make_dataset

        self.count += 1
        tag = "wh" if kind == WEBHOOK else "bare"
        run_id = fake_cuid(f"bench-{tag}-{self.count:03d}-{secrets.token_hex(3)}")
        data = make_dataset(
            MODEL_TYPE, self.args.rows, media_url_for=self.labelbox.add_media, model_run_id=run_id
        )
        self.labelbox.add_model_run(run_id, rows=data.rows, name=f"bench {run_id}")
        run = Run(kind, run_id)
        self.recorder.runs[run_id] = run
        return run

    async def webhook_run(self) -> Run:
        run = self.seed(WEBHOOK)
        body = json.dumps(
            {"modelRunId": run.run_id, "modelType": MODEL_TYPE, "modelId": fake_cuid("model1"),
             "organizationId": fake_cuid("org1")}
        ).encode()  # fmt: skip
        headers = signed_headers(WEBHOOK_SECRET, body)
        run.mark("post", time.monotonic())
        async with self.http.post(f"{self.url}/model_run", data=body, headers=headers) as resp:
            text = await resp.text()
            run.mark("answered", time.monotonic())
            if resp.status != 201:
                raise RuntimeError(f"POST /model_run answered {resp.status}: {text}")
        name = json.loads(text)["name"]
        try:
            await self.wait(run)
            if self.model is None:
                job = await self.kube.list(
                    JOBS, NAMESPACE, label_selector=f"lbtrain.io/model-run={name}"
                )
                self.model = job["items"][0]
                self.model_run_id = run.run_id
        finally:
            began = time.monotonic()
            await self.retry(self.kube.delete, MODELRUNS, name, NAMESPACE)
            await self.until_gone(JOBS, label=f"lbtrain.io/model-run={name}")
            job_gone = time.monotonic()
            await self.reap(run)
            await self.until_gone(MODELRUNS, name=name)
            run.cleanup_s = time.monotonic() - began
            run.cleanup_note = f"Job gone {job_gone - began:.1f}s, all {run.cleanup_s:.1f}s"
        return run

    def bare_job(self, run: Run, name: str) -> dict[str, Any]:
        assert self.model is not None
        spec = copy.deepcopy(self.model["spec"])
        for key in ("selector", "manualSelector"):
            spec.pop(key, None)
        tmeta = spec["template"]["metadata"]
        labels = {k: v for k, v in (tmeta.get("labels") or {}).items() if not OWNED_LABEL.match(k)}
        tmeta["labels"] = {**labels, BENCH_LABEL: "bare"}
        # The same pod for another Labelbox run: every mention of the model run's id replaced.
        spec = json.loads(json.dumps(spec).replace(self.model_run_id, run.run_id))
        return {
            "metadata": {
                "name": name,
                "labels": {BENCH_LABEL: "bare"},
                "annotations": {ANNOTATION_RUN_ID: run.run_id},
            },
            "spec": spec,
        }

    async def bare_run(self) -> Run:
        run = self.seed(BARE)
        name = f"bench-bare-{self.count:03d}"
        body = self.bare_job(run, name)
        run.mark("post", time.monotonic())
        await self.kube.create(JOBS, body, NAMESPACE, decode=False)
        try:
            await self.wait(run)
        finally:
            began = time.monotonic()
            await self.retry(self.kube.delete, JOBS, name, NAMESPACE)
            await self.until_gone(JOBS, name=name)
            job_gone = time.monotonic()
            await self.reap(run)
            run.cleanup_s = time.monotonic() - began
            run.cleanup_note = f"Job gone {job_gone - began:.1f}s, all {run.cleanup_s:.1f}s"
        return run

    async def wait(self, run: Run) -> None:
        try:
            await asyncio.wait_for(run.done.wait(), self.args.run_timeout_s)
        except TimeoutError:
            run.failure = f"no running `train` container in {self.args.run_timeout_s}s"
        if run.failure:
            raise RuntimeError(f"{run.kind} run {run.run_id}: {run.failure}; marks {run.marks}")

    async def reap(self, run: Run | None = None) -> None:
        """Delete the run's pod (None: every run's) with a 1 s grace period once its owner is
        gone, and wait it out."""
        pods = await self.retry(self.kube.list, PODS, NAMESPACE)
        mine = [
            p["metadata"]["name"]
            for p in pods["items"]
            if (ids := (p["metadata"].get("annotations") or {}).get(ANNOTATION_RUN_ID))
            and (run is None or ids == run.run_id)
        ]
        for pod in mine:
            with contextlib.suppress(NotFound):
                await self.retry(self.kube.delete, PODS, pod, NAMESPACE, grace_period_seconds=1)
        for pod in mine:
            await self.until_gone(PODS, name=pod)

    async def sweep(self) -> None:
        """After a failed run: delete every ModelRun and Job of the namespace (the chart makes
        none of its own) and every trainer pod, and wait until all are gone."""
        for res in (MODELRUNS, JOBS):
            for item in (await self.retry(self.kube.list, res, NAMESPACE))["items"]:
                with contextlib.suppress(NotFound):
                    await self.retry(self.kube.delete, res, item["metadata"]["name"], NAMESPACE)
        for res in (JOBS, MODELRUNS):
            await self.until_gone(res, label="")
        await self.reap()

    async def retry(self, verb: Any, *args: Any, **kwargs: Any) -> Any:
        """`verb(*args)`, retried (5 tries, 1 s apart) while the API server does not answer."""
        for attempt in range(5):
            try:
                return await verb(*args, **kwargs)
            except ApiUnreachable:
                if attempt == 4:
                    raise
                await asyncio.sleep(1)
        raise AssertionError("unreachable")

    async def until_gone(
        self, res: Resource, *, name: str | None = None, label: str | None = None
    ) -> None:
        deadline = time.monotonic() + self.args.cleanup_timeout_s
        while time.monotonic() < deadline:
            try:
                if name is not None:
                    await self.kube.get(res, name, NAMESPACE)
                elif not (await self.kube.list(res, NAMESPACE, label_selector=label))["items"]:
                    return
            except NotFound:
                return
            except ApiUnreachable as exc:
                log(f"cleanup: the API server did not answer ({exc}); trying again")
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{res.kind} {name or label or '(any)'} still there after cleanup")

    async def close(self) -> None:
        await self.http.close()


async def measure(
    plane: ControlPlane, labelbox: FakeLabelbox, args: argparse.Namespace
) -> tuple[dict[str, list[Run]], list[str]]:
    url = service_url(plane)
    async with KubeClient(load_config(str(plane.kubeconfig))) as kube:
        bench = Bench(kube, labelbox, url, args)
        watches = [
            asyncio.create_task(watch_forever(kube, res, bench.recorder))
            for res in (MODELRUNS, JOBS, PODS)
        ]
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
                if (intruder := node_taken_over(plane)) is not None:
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


def summarise(
    results: dict[str, list[Run]],
    failures: list[str],
    info: dict[str, str],
    args: argparse.Namespace,
) -> str:
    w = [r.total for r in results[WEBHOOK]]
    b = [r.total for r in results[BARE]]
    n = min(len(w), len(b))
    lines = [
        f"`bench/realnode_bench.py`: on the testbed's real node, the time from a signed "
        f"`POST /model_run` (to the webhook's Service ClusterIP; the webhook and the operator "
        f"run as the chart's pods) until the trainer pod's `train` container is running, "
        f"against a bare `batch/v1` Job with the same spec and pod template created straight "
        f"with the API by the same client, timed from the create to the same point. Both run "
        f"the real `export` and `prepare` init containers against a fake Labelbox on the node's "
        f"bridge ({args.rows} text rows each); both images are imported into the node "
        f"beforehand. {n} interleaved pairs (the order alternating) after one unmeasured "
        f"warm-up of each; every run is cleaned up (pod gone) before the next. Times are taken "
        f"on this machine when the watch events (ModelRuns, Jobs, pods) arrive.",
        "",
        f"Machine: `nproc` = {info['nproc']}, {info['mem_gib']} GiB, {info['cpu']}, "
        f"kernel {info['kernel']}, Python {info['python']}; the control plane, the node, the "
        f"pods and the benchmark share it. Load average (1 min) before/after: "
        f"{info['load_before']}/{info['load']}. Run on {info['date']} at commit "
        f"{info['commit']}: `{info['command']}`. Images: `{info['images']}`.",
        "",
        "| path | runs | p50 s | p99 s | mean s | min s | max s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, values in ((WEBHOOK, w), (BARE, b)):
        label = (
            "webhook (POST → `train` running)"
            if kind == WEBHOOK
            else "bare Job (create → `train` running)"
        )
        lines.append(
            f"| {label} | {len(values)} | {percentile(values, 50):.2f} | "
            f"{percentile(values, 99):.2f} | {statistics.fmean(values):.2f} | "
            f"{min(values):.2f} | {max(values):.2f} |"
        )
    lines.append(
        f"| **ratio webhook / bare** | | **{percentile(w, 50) / percentile(b, 50):.2f}** | "
        f"**{percentile(w, 99) / percentile(b, 99):.2f}** | "
        f"**{statistics.fmean(w) / statistics.fmean(b):.2f}** | | |"
    )
    diffs = [x.total - y.total for x, y in zip(results[WEBHOOK], results[BARE], strict=False)]
    lines += [
        "",
        f"Webhook minus bare Job within a pair: median {statistics.median(diffs):+.2f} s, "
        f"mean {statistics.fmean(diffs):+.2f} s.",
        "",
        "Where the time goes: the median of each mark's time since the request or create "
        "(*at*), and of each phase, from the mark before it (*phase*; the POST's answer is "
        "off that chain: the ModelRun's watch event can arrive before it), in milliseconds:",
        "",
        "| mark | webhook at | webhook phase | bare Job at | bare Job phase |",
        "|---|---:|---:|---:|---:|",
    ]
    cells: dict[tuple[str, str], tuple[float, float]] = {}
    for kind in (WEBHOOK, BARE):
        chain = [m for m in MARKS[kind] if m != "answered"]
        prev_of = {cur: prev for prev, cur in itertools.pairwise(chain)} | {"answered": "post"}
        for mark in MARKS[kind][1:]:
            runs = [r for r in results[kind] if mark in r.marks and prev_of[mark] in r.marks]
            if runs:
                at = statistics.median(r.marks[mark] - r.marks["post"] for r in runs)
                gap = statistics.median(r.marks[mark] - r.marks[prev_of[mark]] for r in runs)
                cells[kind, mark] = (at * 1000, gap * 1000)

    def cell(kind: str, mark: str) -> str:
        if (kind, mark) not in cells:
            return " | "
        at, gap = cells[kind, mark]
        return f"{at:,.0f} | {gap:,.0f}"

    for mark in MARKS[WEBHOOK][1:]:
        lines.append(f"| {MARK_TEXT[mark]} | {cell(WEBHOOK, mark)} | {cell(BARE, mark)} |")
    wc = [r.cleanup_s for r in results[WEBHOOK]]
    bc = [r.cleanup_s for r in results[BARE]]
    lines += [
        "",
        "The bare Job's *Job seen* phase runs from its create; the webhook path's extra steps "
        "are the POST (the webhook's ModelRun create), the ModelRun's watch event and the "
        "operator's Job create, up to *Job seen*. Cleanup (untimed above, between runs: delete, "
        f"then the pod gone): median {statistics.median(wc):.1f} s after a webhook run, "
        f"{statistics.median(bc):.1f} s after a bare Job.",
        "",
        f"Failed pairs (dropped whole, not in the figures): {len(failures)}"
        + "".join(f"\n- {f[:300]}" for f in failures),
    ]
    return "\n".join(lines)


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
    args = p.parse_args(argv)
    if args.runs < 1 or args.rows < 1:
        p.error("--runs and --rows must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    info = {"load_before": f"{os.getloadavg()[0]:.1f}"}
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
            results, failures = asyncio.run(measure(plane, labelbox, args))
    if not results[WEBHOOK] or not results[BARE]:
        log(f"no pair measured; failures: {failures}")
        return 1
    info.update(machine())
    info["images"] = f"{images.lbtrain.ref}`, `{images.trainer.ref}"
    info["command"] = ".venv/bin/python bench/realnode_bench.py" + "".join(f" {a}" for a in argv)
    text = summarise(results, failures, info, args)
    print("\n" + text + "\n")
    if not args.no_write:
        write_block("realnode_bench.py", text, "## real node")
        log("written to bench/README.md")
    return 0 if len(results[WEBHOOK]) == args.runs else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
