"""`lbtrain demo`: the whole flow on this machine, no cluster, GPU or Labelbox account.

A real control plane (the testbed), the real webhook and operator as processes, the local pod
runner playing the kubelet (or, with `--real-node`, a real node running the trainer image built
by `make images`), the trainer training small models on this CPU, and the fake
Labelbox serving a bundled dataset per model type and recording everything it receives. A
signed `POST /model_run` per model type starts it all, exactly as a click on Train Model would.
With `--labelbox-api-key` and `--model-run-id` it reports to, and exports from, the real
Labelbox instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from lbtrain import contract
from lbtrain.kube import (
    MODELRUNS,
    NAMESPACES,
    SECRETS,
    SERVICEACCOUNTS,
    TRAININGTEMPLATES,
    KubeClient,
    load_config,
)
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.images import ensure_images
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed.binaries import ensure_binaries, repo_root
from lbtrain_dev.testbed.cli import default_node_store
from lbtrain_dev.testbed.controlplane import free_port, term_when_parent_dies
from lbtrain_dev.testbed.node import NodeError, import_image
from lbtrain_dev.testbed.podrunner import LocalPodRunner
from lbtrain_webhook.signature import sign

NAMESPACE = "lbtrain-demo"
ARTIFACTS_CLAIM = "lbtrain-artifacts"  # what examples/templates mount at /artifacts
DEMO_MODEL_ID = fake_cuid("demo-model")
HEADLINE_KEYS = ("headline", "macro_f1", "accuracy", "map", "mAP", "f1", "micro_f1")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbtrain demo",
        description="Run lbtrain end to end on this machine: testbed control plane, webhook, "
        "operator, a local pod runner for the trainer, and a fake Labelbox with a small dataset "
        "per model type. Exits non-zero unless every run reaches COMPLETE.",
    )
    p.add_argument(
        "--model-type",
        action="append",
        choices=contract.MODEL_TYPES,
        help="train only this model type (repeatable; default: all six)",
    )
    p.add_argument("--rows", type=int, default=40, help="rows in each bundled dataset")
    p.add_argument("--epochs", type=int, help="epochs of each small model (default: the trainer's)")
    p.add_argument("--parallel", type=int, default=2, help="runs that train at the same time")
    p.add_argument("--timeout", type=float, default=1200, help="give up after this many seconds")
    p.add_argument(
        "--report",
        type=Path,
        help="also write a JSON report: per run, every Labelbox status update, the predictions "
        "and metrics received, the run's config and its final ModelRun status",
    )
    p.add_argument(
        "--real-node",
        action="store_true",
        help="run the trainer pods on a real node (containerd, kubelet; needs root and the "
        "images of `make images`) instead of the local pod runner",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="leave everything running at the end (Ctrl-C to stop) to explore with kubectl",
    )
    real = p.add_argument_group("real Labelbox (instead of the fake)")
    real.add_argument(
        "--labelbox-api-key", help="a Labelbox API key (needs network access to Labelbox)"
    )
    real.add_argument(
        "--model-run-id", help="the Labelbox model run to train (with --labelbox-api-key)"
    )
    real.add_argument("--labelbox-endpoint", default=contract.DEFAULT_LABELBOX_ENDPOINT)
    real.add_argument("--labelbox-rest-endpoint", default=contract.DEFAULT_LABELBOX_REST_ENDPOINT)
    return p


def say(text: str) -> None:
    print(text, flush=True)


def demo_templates(
    endpoint: str, rest: str, epochs: int | None, image: str | None = None
) -> list[dict[str, Any]]:
    """The six example templates, sized for a laptop: no GPU, the small models; `image` replaces
    the examples' trainer image (the one `make images` built, for a real node)."""
    out = []
    for path in sorted((repo_root() / "examples" / "templates").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        spec = doc["spec"]
        for key in ("nodeSelector", "tolerations", "resources", "pretrained"):
            spec.pop(key, None)
        spec.update(
            gpus=0,
            imagePullGracePeriodSeconds=30,
            backoffLimit=1,
            activeDeadlineSeconds=1800,
            labelbox={"endpoint": endpoint, "restEndpoint": rest},
        )
        if image:
            spec["image"] = image
        # The fake Labelbox serves the media from this machine (127.0.0.1 for local pods),
        # which the trainer refuses unless told (images/trainer/README.md, "Row data").
        spec["env"] = [
            *spec.get("env", []),
            {"name": contract.ENV_ALLOW_LOOPBACK_MEDIA, "value": "true"},
        ]
        spec["hyperparameters"] = {"model_size": "small"}
        if epochs:
            spec["hyperparameters"]["epochs"] = epochs
        out.append({"metadata": {"name": doc["metadata"]["name"]}, "spec": spec})
    return out


def artifacts_volume(plane: ControlPlane, folder: Path) -> None:
    """The example templates' artifacts claim, bound to a folder of this machine (as a cluster's
    storage would provide it): on a real node the trained weights land in `folder`."""
    plane.bind_hostpath_claim(folder, NAMESPACE, ARTIFACTS_CLAIM, size="10Gi")
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": ARTIFACTS_CLAIM, "namespace": NAMESPACE},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "resources": {"requests": {"storage": "10Gi"}},
        },
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(claim), check=True)


@contextlib.contextmanager
def process(args: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            preexec_fn=term_when_parent_dies,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def headline(summary: dict[str, Any]) -> str:
    """The trainer names its headline metric (`headline_metric`); older summaries did not."""
    metrics = summary.get("metrics") or {}
    named = summary.get("headline_metric")
    if isinstance(named, str) and isinstance(metrics.get(named), int | float):
        return f"{named} {metrics[named]:.3f}"
    for key in HEADLINE_KEYS:
        for source in (summary, metrics):
            value = source.get(key)
            if isinstance(value, int | float):
                return f"{key} {value:.3f}"
    return "-"


async def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s")


async def run_demo(
    args: argparse.Namespace, plane: ControlPlane, work: Path, trainer_image: str | None = None
) -> int:
    from lbtrain_dev.fake_labelbox import FakeLabelbox

    real = bool(args.labelbox_api_key)
    if real and not args.model_run_id:
        say("lbtrain demo: --labelbox-api-key needs --model-run-id (and --model-type)")
        return 2
    types = list(args.model_type or contract.MODEL_TYPES)
    if real and len(types) != 1:
        say("lbtrain demo: with a real model run, name its one --model-type")
        return 2
    api_key = args.labelbox_api_key or "demo-key-" + secrets.token_hex(4)
    webhook_secret = secrets.token_hex(16)
    # On a real node, pods reach the fake Labelbox at the node's bridge address.
    fake_ctx = (
        contextlib.nullcontext(None)
        if real
        else FakeLabelbox.in_thread(api_key=api_key, host=plane.state.host)
    )
    with fake_ctx as fake:
        endpoint = fake.endpoint if fake is not None else args.labelbox_endpoint
        rest = fake.rest_endpoint if fake is not None else args.labelbox_rest_endpoint
        run_ids = {t: (args.model_run_id if real else fake_cuid(f"demo-{t}")) for t in types}
        if fake is not None:
            from lbtrain_trainer.synthetic import make_dataset

            for t, run_id in run_ids.items():
                data = make_dataset(
                    t,
                    args.rows,
                    media_url_for=fake.add_media,
                    model_id=DEMO_MODEL_ID,
                    model_run_id=run_id,
                )
                fake.add_model_run(run_id, rows=data.rows, name=f"demo {t}")
            say(
                f"fake Labelbox at {fake.base_url}: "
                f"{len(types)} model run(s), {args.rows} rows each"
            )
        async with KubeClient(load_config(str(plane.kubeconfig))) as kube:
            await kube.create(NAMESPACES, {"metadata": {"name": NAMESPACE}})
            await kube.wait_for(SERVICEACCOUNTS, "default", NAMESPACE, lambda _: True)
            await kube.create(
                SECRETS,
                {"metadata": {"name": "lbtrain-labelbox"}, "stringData": {"api-key": api_key}},
                NAMESPACE,
            )
            for template in demo_templates(endpoint, rest, args.epochs, trainer_image):
                await kube.create(TRAININGTEMPLATES, template, NAMESPACE)
            if trainer_image:
                artifacts_volume(plane, work / "artifacts")
            say(f"installed the CRDs and the TrainingTemplates in namespace {NAMESPACE}")
            port, wh_metrics = free_port(), free_port()
            common = {"KUBECONFIG": str(plane.kubeconfig), "NO_PROXY": "127.0.0.1,localhost"}
            lbtrain = [sys.executable, "-m", "lbtrain"]
            with (
                process(
                    [
                        *lbtrain,
                        "webhook",
                        f"--namespace={NAMESPACE}",
                        f"--port={port}",
                        f"--metrics-port={wh_metrics}",
                        "--host=127.0.0.1",
                    ],
                    work / "webhook.log",
                    {**common, "LBTRAIN_WEBHOOK_SECRET": webhook_secret},
                ),
                process(
                    [
                        *lbtrain,
                        "operator",
                        f"--namespace={NAMESPACE}",
                        f"--labelbox-endpoint={endpoint}",
                        f"--labelbox-rest-endpoint={rest}",
                        "--metrics-port=0",
                        "--liveness-port=0",
                        "--resync-interval=5",
                    ],
                    work / "operator.log",
                    {**common, "LABELBOX_API_KEY": api_key},
                ),
            ):
                await wait_ready(f"http://127.0.0.1:{port}/readyz")
                say(f"webhook on http://127.0.0.1:{port}, operator running (logs in {work})")
                runner = (
                    None
                    if trainer_image
                    else LocalPodRunner(
                        kube,
                        NAMESPACE,
                        work / "pods",
                        max_parallel=args.parallel,
                        extra_env={"HF_HUB_OFFLINE": "1", "NO_PROXY": "127.0.0.1,localhost"},
                    )
                )
                runner_task = asyncio.create_task(
                    runner.run_forever() if runner else asyncio.Event().wait()
                )
                try:
                    code = await drive(args, kube, port, webhook_secret, run_ids, fake)
                    if args.keep:
                        say(f"\n--keep: KUBECONFIG={plane.kubeconfig}; Ctrl-C to stop")
                        await asyncio.Event().wait()
                    return code
                finally:
                    runner_task.cancel()
                    if runner:
                        await runner.close()


async def drive(
    args: argparse.Namespace,
    kube: KubeClient,
    port: int,
    secret: str,
    run_ids: dict[str, str],
    fake: Any,
) -> int:
    started = time.monotonic()
    names: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        for model_type, run_id in run_ids.items():
            body = json.dumps(
                {
                    "modelRunId": run_id,
                    "modelType": model_type,
                    "modelId": DEMO_MODEL_ID,
                    "organizationId": fake_cuid("demo-org"),
                }
            ).encode()
            async with session.post(
                f"http://127.0.0.1:{port}/model_run",
                data=body,
                headers={
                    "X-Hub-Signature": sign(secret.encode(), body),
                    "Content-Type": "application/json",
                },
            ) as resp:
                answer = await resp.json()
                if resp.status >= 300:
                    say(f"POST /model_run {model_type}: {resp.status} {answer}")
                    return 1
                names[model_type] = str(answer["name"])
                say(
                    f"POST /model_run {model_type:<28} -> {resp.status} "
                    f"ModelRun {names[model_type]}"
                )
    seen: dict[str, tuple[Any, ...]] = {}
    finals: dict[str, dict[str, Any]] = {}
    while len(finals) < len(names) and time.monotonic() - started < args.timeout:
        for model_type, name in names.items():
            if model_type in finals:
                continue
            status = (await kube.get(MODELRUNS, name, NAMESPACE)).get("status") or {}
            box = status.get("labelbox") or {}
            view = (status.get("phase"), status.get("reason"), box.get("acknowledged"))
            if view != seen.get(model_type):
                seen[model_type] = view
                elapsed = time.monotonic() - started
                say(
                    f"[{elapsed:6.1f}s] {model_type:<28} {view[0] or 'New':<10} "
                    f"{view[1] or '':<16} "
                    f"Labelbox: {view[2] or '-'}"
                )
            if status.get("phase") in ("Succeeded", "Failed") and box.get("acknowledged") in (
                "COMPLETE",
                "FAILED",
            ):
                finals[model_type] = {**status, "duration": time.monotonic() - started}
        await asyncio.sleep(1)
    say("")
    say(f"{'model type':<28} {'Labelbox':<10} {'duration':>9}  {'headline metric':<22} predictions")
    ok = True
    for model_type, run_id in run_ids.items():
        st = finals.get(model_type)
        final = (st or {}).get("labelbox", {}).get("acknowledged", "TIMEOUT")
        ok = ok and final == "COMPLETE"
        preds = len(fake.predictions(run_id)) if fake is not None else "-"
        duration = f"{st['duration']:.0f}s" if st else "-"
        metric = headline((st or {}).get("summary") or {})
        say(f"{model_type:<28} {final:<10} {duration:>9}  {metric:<22} {preds}")
        if st and final != "COMPLETE":
            say(f"    {st.get('reason')}: {st.get('message', '')[:300]}")
    if args.report:
        write_report(args.report, run_ids, finals, fake)
    return 0 if ok else 1


def write_report(
    path: Path, run_ids: dict[str, str], finals: dict[str, dict[str, Any]], fake: Any
) -> None:
    report: dict[str, Any] = {}
    for model_type, run_id in run_ids.items():
        entry: dict[str, Any] = {"modelRunId": run_id, "modelRun": finals.get(model_type)}
        if fake is not None:
            entry["statusUpdates"] = [
                {"status": u.status, "metadata": u.metadata, "errorMessage": u.error_message}
                for u in fake.status_updates(run_id)
            ]
            entry["predictions"] = fake.predictions(run_id)
            entry["imports"] = fake.imports(run_id)
            entry["config"] = fake.config(run_id)
        report[model_type] = entry
    path.write_text(json.dumps(report, indent=2, default=str))


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would raise KeyboardInterrupt.

    `kill <pid>` must stop the demo as Ctrl-C does: every `finally` runs, so the webhook, the
    operator, the pod runner's trainers and the control plane are stopped in order. Python's
    default for SIGTERM is to die on the spot, which left the webhook and operator running.
    A KeyboardInterrupt subclass, because asyncio.run already unwinds its tasks for that one.
    """


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    signal.signal(signal.SIGTERM, _raise_terminated)
    say("lbtrain demo: starting a local control plane (the first run builds it: 5 to 15 min)")
    bin_dir = ensure_binaries()
    with tempfile.TemporaryDirectory(prefix="lbtrain-demo-") as tmp:
        work = Path(tmp)
        store = default_node_store() if args.real_node else None
        plane = ControlPlane(bin_dir, work / "testbed", node_store=store)
        try:
            trainer_image = None
            if args.real_node:
                say("lbtrain demo: building (or finding) the images, starting a real node")
                images = ensure_images()
                plane.start(die_with_parent=True, timeout=180)
                for image in (images.lbtrain, images.trainer):
                    import_image(plane.node_paths, image.archive, image.ref)
                trainer_image = images.trainer.ref
            else:
                plane.start(die_with_parent=True)
            plane.install_crds(repo_root() / "crds")
            return asyncio.run(run_demo(args, plane, work, trainer_image))
        except Terminated:
            say("lbtrain demo: SIGTERM: stopping everything it started")
            return 128 + signal.SIGTERM
        except KeyboardInterrupt:
            return 130
        except NodeError as exc:
            say(f"lbtrain demo: {exc}")
            return 2
        finally:
            plane.stop()
