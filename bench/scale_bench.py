"""Real node: scale-out startup, a ModelRun of 1, 2 or 4 ranks against the same Job created bare.

    .venv/bin/python bench/scale_bench.py [--ranks 1,2,4] [--runs 3] [--rows 40] [--no-write]
    .venv/bin/python bench/scale_bench.py --smoke   # no node: checks the bench still runs

Needs what bench/realnode_bench.py needs (root, the testbed binaries, the two images) and the
S3 server's binary (`ensure_s3_binary`). It starts a testbed control plane with a real node,
imports both images, starts a fake Labelbox and a real S3 server (versitygw) on the node's
bridge, and installs the chart with three CPU templates of one text task, one per shape:

- 1 rank: a plain Job, `lbtrain trainer train` in one pod;
- 2 ranks: one pod, `numProcPerNode: 2` (torchrun, two processes);
- 4 ranks: two pods of two processes (`numNodes: 2`): an Indexed Job and the headless Service
  `rdzv-<job>`, weights and checkpoints in the S3 bucket the ranks share.

For each shape in `--ranks`: one warm-up ModelRun (unmeasured; the Job and Service the operator
built for it are the bare runs' model), then `--runs` pairs, the order inside a pair alternating:

- **ModelRun**: a ModelRun created with the API (the operator builds the Job, and the Service);
- **bare Job**: the warm-up's Job (and Service) created directly by the same client, renamed,
  with a fresh model run id and run uid, without the operator's labels, owner references,
  controller selector and status: the operator never sees it.

Both are timed from just before the create until a pod watch shows every pod of the Job with its
`train` container running (for two processes per pod, that is torchrun starting the ranks; the
`export` and `prepare` init containers really run against the fake Labelbox before it). Each run
is deleted, its pods with a 1 s grace period, and gone before the next starts. It prints the
medians per shape and the ratio bare / ModelRun (the bar: at least 0.9), and writes them into the
`### scale-out startup` part of bench/README.md (`--no-write`: print only).

`--smoke`: no node, no root, no image (as `make test` runs it): a control plane without a node,
`lbtrain operator` as a local process, `FakeKubelet` in the node's place, one pair per shape of
a few rows. Its times mean nothing and nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*`, as mypy sees it
from bench.lib.readme import write_block
from bench.realnode.runs import API_KEY, NAMESPACE, WEBHOOK_SECRET, log
from bench.realnode.scale import SHAPES, ScaleBench, summarise, template_fields
from bench.realnode.smoke import smoke_cluster, smoke_node
from bench.realnode.watch import watch_forever
from bench.realnode_bench import helm, machine, node
from lbtrain import contract
from lbtrain.kube import PODS, SECRETS, TRAININGTEMPLATES, KubeClient, load_config
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.testbed import ControlPlane
from lbtrain_dev.testbed import nodeconfig as nc
from lbtrain_dev.testbed.node import import_image
from lbtrain_dev.testbed.s3server import S3Server, ensure_s3_binary, s3_server

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "lbtrain"
BUCKET, BUCKET_SECRET = "runs", "bucket-credentials"
HYPER = {"epochs": 1, "model_size": "small", "num_workers": 0}
SMOKE = {"runs": 1, "rows": 8, "no_write": True, "run_timeout_s": 60.0}


def bucket_env(endpoint: str) -> list[dict[str, Any]]:
    def secret(name: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": BUCKET_SECRET, "key": key}}}

    return [
        {"name": "AWS_ENDPOINT_URL", "value": endpoint},
        {"name": "AWS_DEFAULT_REGION", "value": "us-east-1"},
        secret("AWS_ACCESS_KEY_ID", "access-key-id"),
        secret("AWS_SECRET_ACCESS_KEY", "secret-access-key"),
    ]


def shape_spec(ranks: int, endpoint: str) -> dict[str, Any]:
    """The CRD fields of the shape's template beyond the model type and image."""
    shape = SHAPES[ranks]
    spec = template_fields(shape)
    if shape.pods > 1:
        spec["artifacts"] = {"destination": f"s3://{BUCKET}/scale/{{modelRunId}}"}
        spec["env"] = bucket_env(endpoint)
        spec["backoffLimit"] = 0
    return spec


def install_chart(
    plane: ControlPlane, labelbox: FakeLabelbox, s3: S3Server, refs: tuple[str, str], work: Path
) -> None:
    kubectl = plane.kubectl
    kubectl("create", "namespace", NAMESPACE, check=True)
    secret = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": BUCKET_SECRET, "namespace": NAMESPACE},
        "stringData": {"access-key-id": s3.access_key, "secret-access-key": s3.secret_key},
    }  # fmt: skip
    kubectl("apply", "-f", "-", input=json.dumps(secret), check=True)
    (repo, tag), (trepo, ttag) = (ref.rsplit(":", 1) for ref in refs)
    values: dict[str, Any] = {
        "image.repository": repo,
        "image.tag": tag,
        "trainingTemplates.defaults.image.repository": trepo,
        "trainingTemplates.defaults.image.tag": ttag,
        "labelbox.endpoint": labelbox.endpoint,
        "labelbox.restEndpoint": labelbox.rest_endpoint,
        "labelbox.apiKey": API_KEY,
        "artifacts.perRunClaim.enabled": False,
    }
    for ranks, shape in SHAPES.items():
        values[f"trainingTemplates.templates.scale-{ranks}"] = {
            "modelType": shape.model_type,
            "gpus": 0,
            # 100m each: four ranks' pods fit the 2-core node beside the chart's own pods.
            "resources": {
                "requests": {"cpu": "100m", "memory": "1Gi"},
                "limits": {"memory": "4Gi"},
            },
            "hyperparameters": HYPER,
            "spec": shape_spec(ranks, s3.endpoint),
        }
    sets = [f"--set-json={key}={json.dumps(value)}" for key, value in values.items()]
    started = time.monotonic()
    done = helm(
        plane, work / "helm", "install", "lbtrain", str(CHART), f"--namespace={NAMESPACE}",
        "--wait", "--timeout=5m", *sets,
    )  # fmt: skip
    if done.returncode != 0:
        print(kubectl("describe", "pods", "-n", NAMESPACE).stdout[-6000:])
        raise RuntimeError(f"helm install failed: {done.stderr}")
    log(f"chart installed and ready in {time.monotonic() - started:.1f}s")


def smoke_template(ranks: int) -> dict[str, Any]:
    """The shape's TrainingTemplate as the chart would install it, as far as --smoke needs it."""
    spec = {"modelType": SHAPES[ranks].model_type, "image": "127.0.0.1:1/trainer:smoke", "gpus": 0}
    spec |= shape_spec(ranks, "http://127.0.0.1:1")
    return {"metadata": {"name": f"scale-{ranks}"}, "spec": spec}


async def smoke_templates(kubeconfig: Path) -> None:
    """The other two templates (smoke_cluster makes the first) and the bucket's Secret."""
    async with KubeClient(load_config(str(kubeconfig))) as kube:
        secret = {"metadata": {"name": BUCKET_SECRET}, "stringData": {"access-key-id": "k",
                  "secret-access-key": "s"}}  # fmt: skip
        await kube.create(SECRETS, secret, NAMESPACE)
        for ranks in SHAPES:
            if ranks != 1:
                await kube.create(TRAININGTEMPLATES, smoke_template(ranks), NAMESPACE)


async def measure(
    plane: ControlPlane, labelbox: FakeLabelbox, args: argparse.Namespace
) -> dict[int, dict[str, list[float]]]:
    async with KubeClient(load_config(str(plane.kubeconfig))) as kube:
        bench = ScaleBench(kube, labelbox, args)
        tasks = [asyncio.create_task(watch_forever(kube, PODS, NAMESPACE, bench.recorder))]
        if args.smoke:
            stages = (contract.STAGE_EXPORT, contract.STAGE_PREPARE, contract.STAGE_TRAIN)
            tasks.append(asyncio.create_task(smoke_node(kube, NAMESPACE, stages)))
        try:
            await asyncio.sleep(1)  # the watch is open
            return await bench.measure(args.ranks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await bench.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ranks", default="1,2,4", help="shapes, by rank count (default %(default)s)")
    p.add_argument("--runs", type=int, default=3, help="pairs per shape (default %(default)s)")
    p.add_argument("--rows", type=int, default=40, help="text rows per run (default %(default)s)")
    p.add_argument("--run-timeout-s", type=float, default=300.0)
    p.add_argument("--cleanup-timeout-s", type=float, default=120.0)
    p.add_argument("--node-wait-s", type=float, default=1200.0)
    p.add_argument("--keep-logs", action="store_true")
    p.add_argument("--images", help="a file holding images/build.sh's output (default: run it)")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--smoke", action="store_true", help=f"no node, no images: {SMOKE}")
    args = p.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    args.ranks = [int(r) for r in str(args.ranks).split(",")]
    if any(r not in SHAPES for r in args.ranks) or args.runs < 1 or args.rows < 1:
        p.error(f"--ranks from {sorted(SHAPES)}; --runs and --rows at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    load_before = f"{os.getloadavg()[0]:.1f}"
    if args.smoke:
        with (
            tempfile.TemporaryDirectory(prefix="lbtrain-bench-") as tmp,
            smoke_cluster(NAMESPACE, smoke_template(1), WEBHOOK_SECRET, Path(tmp)) as cluster,
        ):
            plane, labelbox, _url = cluster
            asyncio.run(smoke_templates(plane.kubeconfig))
            results = asyncio.run(measure(plane, labelbox, args))
        return finish(results, args, argv, load_before, "none (--smoke)")
    from lbtrain_dev.images import ensure_images, parse_built

    # --images: build.sh's two lines, saved from an earlier run (no wait on the build lock).
    images = parse_built(Path(args.images).read_text()) if args.images else ensure_images()
    s3_binary = ensure_s3_binary()
    with node(args) as plane, tempfile.TemporaryDirectory(prefix="lbtrain-bench-") as tmp:
        for image in (images.lbtrain, images.trainer):
            import_image(plane.node_paths, image.archive, image.ref)
        with (
            FakeLabelbox.in_thread(api_key=API_KEY, host=nc.node_ip()) as labelbox,
            s3_server([BUCKET], host=nc.node_ip(), binary=s3_binary) as s3,
        ):
            refs = (images.lbtrain.ref, images.trainer.ref)
            install_chart(plane, labelbox, s3, refs, Path(tmp))
            results = asyncio.run(measure(plane, labelbox, args))
    return finish(results, args, argv, load_before, f"{images.lbtrain.ref}`, `{images.trainer.ref}")


def finish(
    results: dict[int, dict[str, list[float]]],
    args: argparse.Namespace,
    argv: list[str],
    load_before: str,
    images: str,
) -> int:
    info = {"load_before": load_before, **machine(), "images": images}
    command = ".venv/bin/python bench/scale_bench.py" + "".join(f" {a}" for a in argv)
    table = summarise(results, info)
    text = (
        f"`bench/scale_bench.py`: on the testbed's real node, from the create of a ModelRun (the "
        f"chart's operator builds the Job) until every pod of the Job has its `train` container "
        f"running (two processes per pod: torchrun started), against the same Job (and headless "
        f"Service, for two pods) created bare with the API, timed the same way. {args.rows} text "
        f"rows per run; the `export` and `prepare` init containers really run; 4 ranks share an "
        f"S3 bucket (versitygw on the node's bridge). {args.runs} interleaved pairs per shape "
        f"after one unmeasured warm-up ModelRun.\n\n{table}\n\n"
        f"Machine: `nproc` = {info['nproc']}, {info['mem_gib']} GiB, {info['cpu']}, kernel "
        f"{info['kernel']}; the control plane, the node, its pods and the bench share it. Load "
        f"(1 min) before/after: {info['load_before']}/{info['load']}. Run on {info['date']} at "
        f"commit {info['commit']}: `{command}`. Images: `{images}`."
    )
    print("\n" + text + "\n")
    print(f"scale_bench: {len(results)} shapes measured, {args.runs} pairs each")
    if not args.no_write:
        write_block("scale_bench.py", text, "### scale-out startup")
        log("written to bench/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
