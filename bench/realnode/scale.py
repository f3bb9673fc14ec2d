"""The scale-out startup bench's runs: a ModelRun of 1, 2 or 4 ranks, and the same Job made bare.

A *ModelRun* run creates a ModelRun (the operator builds its Job, and for two pods the headless
Service `rdzv-<job>`); a *bare* run creates the Job (and Service) the operator built for the same
shape at the warm-up, renamed, with a fresh model run id and run uid, without the operator's
labels, owner references and controller fields, so the operator never sees it. Both are timed
from the create to the moment every pod of the Job has its `train` container running: for two
processes in a pod the container running is the start of torchrun, which starts the ranks.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import re
import secrets
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from lbtrain import contract
from lbtrain.kube import JOBS, MODELRUNS, PODS, SERVICES, KubeClient, NotFound, Resource
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid

from .runs import NAMESPACE, Bench, log
from .watch import ANNOTATION_RUN_ID, Recorder, Run, _pod_failure

TASK = "text_single_classification"
OPERATOR, BARE = "ModelRun", "bare Job"
BENCH_LABEL = "bench.lbtrain.io/kind"
# Labels that the operator or the Job controller own: not copied onto the bare Job.
OWNED_LABEL = re.compile(
    r"^(lbtrain\.io/|app\.kubernetes\.io/managed-by$|batch\.kubernetes\.io/|controller-uid$|"
    r"job-name$)"
)


@dataclass(frozen=True)
class Shape:
    ranks: int
    pods: int
    procs: int
    model_type: str  # the template serving it

    @property
    def text(self) -> str:
        return f"{self.ranks} rank{'s' if self.ranks > 1 else ''} ({self.pods} pod x {self.procs})"


SHAPES = {
    1: Shape(1, 1, 1, "Scale - 1 rank"),
    2: Shape(2, 1, 2, "Scale - 1 pod of 2"),
    4: Shape(4, 2, 2, "Scale - 2 pods of 2"),
}


def template_fields(shape: Shape) -> dict[str, Any]:
    """The CRD fields (besides modelType, image, resources) that give a template its shape."""
    fields: dict[str, Any] = {"task": TASK}
    if shape.procs > 1:
        fields["numProcPerNode"] = shape.procs
    if shape.pods > 1:
        fields["numNodes"] = shape.pods
    return fields


@dataclass
class ScaleRun(Run):
    pods: int = 1
    train_at: dict[str, float] = field(default_factory=dict)


class ScaleRecorder(Recorder):
    """Per run (by the pods' model-run-id annotation): when each pod's `train` first ran."""

    def observe(self, res: Resource, obj: dict[str, Any], now: float) -> None:
        if res is not PODS:
            return
        meta = obj.get("metadata") or {}
        run = self.runs.get((meta.get("annotations") or {}).get(ANNOTATION_RUN_ID, ""))
        if not isinstance(run, ScaleRun) or run.done.is_set():
            return
        for cs in (obj.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") == contract.STAGE_TRAIN and "running" in (cs.get("state") or {}):
                run.train_at.setdefault(meta["name"], now)
        if len(run.train_at) >= run.pods:
            run.mark("train", max(run.train_at.values()))
            run.done.set()
        elif failure := _pod_failure(obj):
            run.failure = failure
            run.done.set()


def strip_meta(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """`obj`'s metadata reduced to what a user writes: name, own labels and annotations."""
    meta = obj.get("metadata") or {}
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if not OWNED_LABEL.match(k)}
    return {
        "name": name,
        "labels": {**labels, BENCH_LABEL: "bare"},
        "annotations": dict(meta.get("annotations") or {}),
    }


def bare_copy(
    job: dict[str, Any], service: dict[str, Any] | None, name: str, swaps: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The operator's Job (and Service) as a user would create them: renamed to `name`, each
    `swaps` key replaced by its value everywhere (job name, model run id, run uid), without
    status, uid, owner references, managed fields, the controller's selector and labels."""
    old = job["metadata"]["name"]
    spec = copy.deepcopy(job["spec"])
    for key in ("selector", "manualSelector"):
        spec.pop(key, None)
    tmeta = spec["template"].setdefault("metadata", {})
    tmeta["labels"] = strip_meta(spec["template"], "")["labels"]
    body: dict[str, Any] = {"metadata": strip_meta(job, name), "spec": spec}
    svc: dict[str, Any] | None = None
    if service is not None:
        sspec = copy.deepcopy(service["spec"])
        for key in ("clusterIPs", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"):
            sspec.pop(key, None)
        sname = service["metadata"]["name"].replace(old, name)
        svc = {"metadata": strip_meta(service, sname), "spec": sspec}
    text = json.dumps([body, svc])
    for before, after in {old: name, **swaps}.items():
        text = text.replace(before, after)
    out = json.loads(text)
    return out[0], out[1]


class ScaleBench:
    def __init__(self, kube: KubeClient, labelbox: FakeLabelbox, args: argparse.Namespace) -> None:
        self.kube, self.labelbox, self.args = kube, labelbox, args
        self.recorder = ScaleRecorder()
        self.helper = Bench(kube, labelbox, "", args)  # retry, until_gone, reap
        self.models: dict[int, tuple[dict[str, Any], dict[str, Any] | None, str, str]] = {}
        self.count = 0

    def seed(self, kind: str, shape: Shape) -> ScaleRun:
        from lbtrain_trainer.synthetic import make_dataset

        self.count += 1
        tag = "mr" if kind == OPERATOR else "bare"
        run_id = fake_cuid(f"scale-{tag}-{self.count:03d}-{secrets.token_hex(3)}")
        data = make_dataset(
            TASK, self.args.rows, media_url_for=self.labelbox.add_media, model_run_id=run_id
        )
        self.labelbox.add_model_run(run_id, rows=data.rows, name=f"scale bench {run_id}")
        run = ScaleRun(kind, run_id, pods=shape.pods)
        self.recorder.runs[run_id] = run
        return run

    async def operator_run(self, shape: Shape) -> ScaleRun:
        run = self.seed(OPERATOR, shape)
        name = f"scale{shape.ranks}-{self.count:03d}"
        body = {
            "metadata": {"name": name},
            "spec": {"modelRunId": run.run_id, "modelType": shape.model_type,
                     "modelId": fake_cuid("model1")},
        }  # fmt: skip
        run.mark("post", time.monotonic())
        created = await self.kube.create(MODELRUNS, body, NAMESPACE)
        try:
            try:
                await self.helper.wait(run)
            except RuntimeError as exc:
                mr = await self.kube.get(MODELRUNS, name, NAMESPACE)
                raise RuntimeError(f"{exc}; ModelRun status {mr.get('status')}") from exc
            if shape.ranks not in self.models:
                await self.keep_model(shape, name, run.run_id, created["metadata"]["uid"])
        finally:
            began = time.monotonic()
            await self.helper.retry(self.kube.delete, MODELRUNS, name, NAMESPACE)
            await self.helper.until_gone(JOBS, label=f"lbtrain.io/model-run={name}")
            await self.helper.reap(run)
            await self.helper.until_gone(MODELRUNS, name=name)
            run.cleanup_s = time.monotonic() - began
        return run

    async def keep_model(self, shape: Shape, name: str, run_id: str, uid: str) -> None:
        ns = NAMESPACE
        jobs = await self.kube.list(JOBS, ns, label_selector=f"lbtrain.io/model-run={name}")
        job = jobs["items"][0]
        service = None
        if shape.pods > 1:
            service = await self.kube.get(SERVICES, f"rdzv-{job['metadata']['name']}", ns)
        self.models[shape.ranks] = (job, service, run_id, uid)

    async def bare_run(self, shape: Shape) -> ScaleRun:
        job, service, old_id, old_uid = self.models[shape.ranks]
        run = self.seed(BARE, shape)
        name = f"bare{shape.ranks}-{self.count:03d}"
        body, svc = bare_copy(job, service, name, {old_id: run.run_id, old_uid: str(uuid.uuid4())})
        ns = NAMESPACE
        run.mark("post", time.monotonic())
        if svc is not None:
            await self.kube.create(SERVICES, svc, ns, decode=False)
        await self.kube.create(JOBS, body, ns, decode=False)
        try:
            await self.helper.wait(run)
        finally:
            began = time.monotonic()
            await self.helper.retry(self.kube.delete, JOBS, name, ns)
            if svc is not None:
                with contextlib.suppress(NotFound):
                    await self.kube.delete(SERVICES, svc["metadata"]["name"], ns)
            await self.helper.until_gone(JOBS, name=name)
            await self.helper.reap(run)
            run.cleanup_s = time.monotonic() - began
        return run

    async def measure(self, ranks: list[int]) -> dict[int, dict[str, list[float]]]:
        """A warm-up ModelRun per shape (its Job the bare runs' model), then `--runs` pairs per
        shape, the order inside a pair alternating."""
        results: dict[int, dict[str, list[float]]] = {}
        for n in ranks:
            shape = SHAPES[n]
            warm = await self.operator_run(shape)
            log(f"{shape.text}: warm-up ModelRun {warm.total:.2f}s")
            got: dict[str, list[float]] = {OPERATOR: [], BARE: []}
            for i in range(self.args.runs):
                order = [self.operator_run, self.bare_run]
                for go in order if i % 2 == 0 else order[::-1]:
                    run = await go(shape)
                    got[run.kind].append(run.total)
                log(f"{shape.text} pair {i + 1}: ModelRun {got[OPERATOR][-1]:.2f}s, "
                    f"bare {got[BARE][-1]:.2f}s")  # fmt: skip
            results[n] = got
        return results

    async def close(self) -> None:
        await self.helper.close()


def summarise(results: dict[int, dict[str, list[float]]], info: dict[str, str]) -> str:
    """The README's table: medians per shape and the ratio bare / ModelRun (1.0: no overhead)."""
    lines = [
        "| shape | runs | ModelRun median s | bare Job median s | **ratio bare / ModelRun** "
        "| ModelRun min-max s | bare min-max s |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, got in results.items():
        m, b = got[OPERATOR], got[BARE]
        mm, bm = statistics.median(m), statistics.median(b)
        lines.append(
            f"| {SHAPES[n].text} | {len(m)} + {len(b)} | {mm:.2f} | {bm:.2f} | **{bm / mm:.2f}** "
            f"| {min(m):.2f}-{max(m):.2f} | {min(b):.2f}-{max(b):.2f} |"
        )
    return "\n".join(lines)
