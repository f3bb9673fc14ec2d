"""One run of each kind on the real node (or its `--smoke` stand-in), and the cleanup between.

A *webhook* run is a signed `POST /model_run` to the webhook; a *bare Job* run creates the
warm-up webhook run's Job spec directly, with its own model run id and without the operator's
labels and owner, so the operator never sees it. Each run is seeded in the fake Labelbox with
`--rows` text rows, timed by the `Recorder`, and cleaned up (its pod gone) before the next.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import re
import secrets
import time
from typing import Any

import aiohttp

from bench.lib.signing import signed_headers
from lbtrain.kube import JOBS, MODELRUNS, PODS, ApiUnreachable, KubeClient, NotFound, Resource
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid

from .figures import BARE, WEBHOOK
from .watch import ANNOTATION_RUN_ID, Recorder, Run

NAMESPACE = "lbtrain-bench"
API_KEY = "bench-key-not-a-secret"
WEBHOOK_SECRET = "bench-webhook-secret-" + secrets.token_hex(8)
MODEL_TYPE = "text_single_classification"
TEMPLATE_KEY = "text-single-classification"
BENCH_LABEL = "bench.lbtrain.io/kind"
# Labels that the operator or the Job controller own: not copied onto the bare Job.
OWNED_LABEL = re.compile(
    r"^(lbtrain\.io/|app\.kubernetes\.io/managed-by$|batch\.kubernetes\.io/|controller-uid$|"
    r"job-name$)"
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


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
