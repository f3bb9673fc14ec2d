"""Live training progress end to end, without a node: the operator (a process), the local pod
runner running the Job's stages as real trainer processes with a projected token the API server
bound to the pod, and the fake Labelbox. A run training for several epochs shows its progress in
`kubectl get` and sends several progress updates to Labelbox, in order, each with every field,
the last before COMPLETE and nothing after it; with Labelbox down while it trains, training
still finishes and the final status arrives, with no progress after it (docs/progress.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from lbtrain import contract
from lbtrain.kube import MODELRUNS, KubeClient
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed.controlplane import free_port

from ..e2e.helpers import progress_of
from .test_end_to_end import pod_runner, trainer_template  # noqa: F401 (a fixture)
from .test_operator_lifecycle import FULL

pytestmark = [
    pytest.mark.testbed,
    pytest.mark.trainer,
    pytest.mark.slow,
    pytest.mark.usefixtures("crds", "lbsecret", "pod_runner"),
]
TYPE = "text_single_classification"
FIELDS = [f for f in contract.PROGRESS_FIELDS if f != "modelRunId"]


async def start(
    name: str, fake: Any, start_operator: Any, make_template: Any, make_run: Any, epochs: int
) -> str:
    from lbtrain_trainer.synthetic import make_dataset

    run_id = fake_cuid(name)
    data = make_dataset(
        TYPE, 80, media_url_for=fake.add_media, model_id=fake_cuid("model1"), model_run_id=run_id
    )
    fake.add_model_run(run_id, rows=data.rows)
    await make_template(TYPE, progressIntervalSeconds=1, **trainer_template(fake, epochs=epochs))
    port = free_port()
    start_operator(
        f"--progress-port={port}",
        f"--progress-url=http://127.0.0.1:{port}{contract.PROGRESS_PATH}",
        "--progress-interval=0",
    )
    await make_run(name, TYPE, model_run_id=run_id, register=False)
    return run_id


async def follow(kube: KubeClient, namespace: str, name: str, timeout: float) -> list[str]:
    """The Progress column's texts, in order, until Labelbox has the final status."""
    texts: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = (await kube.get(MODELRUNS, name, namespace)).get("status") or {}
        text = (status.get("progress") or {}).get("text")
        if text and (not texts or texts[-1] != text):
            texts.append(text)
        if (status.get("labelbox") or {}).get("acknowledged") in ("COMPLETE", "FAILED"):
            return texts
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name} never finished; progress seen: {texts}")


@pytest.mark.timeout(420)
async def test_progress_reaches_kubectl_and_labelbox_in_order_before_complete(
    kube, namespace, fake_labelbox, start_operator, make_template, make_run, kubectl
) -> None:
    run_id = await start("live", fake_labelbox, start_operator, make_template, make_run, 8)
    texts = await follow(kube, namespace, "live", 400)
    assert len(texts) >= 2, texts  # the column changed while it trained
    assert texts[-1].startswith("epoch 8/8 · 100%"), texts
    updates = fake_labelbox.status_updates(run_id)
    statuses = [u.status for u in updates]
    assert list(dict.fromkeys(statuses)) == FULL and statuses[-1] == "COMPLETE", statuses
    told = [(i, p) for i, u in enumerate(updates) if (p := progress_of(u)) is not None]
    stamps = [p["measuredAt"] for _, p in told]
    assert len(set(stamps)) >= 2, told  # at least two distinct progress updates
    assert stamps == sorted(stamps)  # in order
    for i, p in told:
        assert updates[i].status == "TRAINING_MODEL"
        assert set(FIELDS) <= set(p), p  # every field
    assert told[-1][0] < statuses.index("COMPLETE")  # the last one before COMPLETE
    assert progress_of(updates[-1]) is None  # ... and nothing with it or after it
    # `kubectl get` prints the column; `describe` the numbers.
    listed = kubectl("get", "modelrun", "live", "-n", namespace, check=True).stdout
    assert "PROGRESS" in listed and "epoch 8/8" in listed
    described = kubectl("describe", "modelrun", "live", "-n", namespace, check=True).stdout
    assert "Examples Per Second" in described and "Train Loss" in described


@pytest.mark.timeout(600)
async def test_labelbox_down_while_training_still_finishes_with_no_progress_after_complete(
    kube, namespace, fake_labelbox, start_operator, make_template, make_run
) -> None:
    run_id = await start("dark", fake_labelbox, start_operator, make_template, make_run, 8)
    await kube.wait_for(
        MODELRUNS,
        "dark",
        namespace,
        lambda mr: (mr.get("status") or {}).get("phase") == "Training",
        timeout=300,
    )
    # Every status call fails while it trains (the trainer's own calls, the prediction upload,
    # still work: this is the operator's channel to Labelbox going dark).
    fake_labelbox.fail("5xx", operations={"updateTrainingPipeline"})
    st = await kube.wait_for(
        MODELRUNS,
        "dark",
        namespace,
        lambda mr: (mr.get("status") or {}).get("phase") == "Succeeded",
        timeout=300,
    )
    assert st["status"]["progress"]["text"].startswith("epoch 8/8")  # training went on, reported
    fake_labelbox.heal()
    await follow(kube, namespace, "dark", 240)  # the SDK retries a call for up to 120 s
    updates = fake_labelbox.status_updates(run_id)
    statuses = [u.status for u in updates]
    assert statuses[-1] == "COMPLETE" and statuses.count("COMPLETE") == 1, statuses
    assert progress_of(updates[-1]) is None
