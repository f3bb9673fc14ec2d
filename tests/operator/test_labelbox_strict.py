"""The operator against a strict fake Labelbox (real API server, fake kubelet, real SDK): a
status Labelbox rejects for its metadata still reaches COMPLETE, and no stale metadata value
survives Labelbox's merge of each update into what it holds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lbtrain.resources.names import LABEL_MODEL_RUN
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed.fake_kubelet import FakeKubelet
from lbtrain_operator.labelbox import SDK_METHOD

from .test_operator_lifecycle import FULL, events_eventually, statuses_settle, until_acknowledged

pytestmark = [pytest.mark.testbed, pytest.mark.usefixtures("crds", "lbsecret")]


def merged(fake: Any, run_id: str) -> dict[str, Any]:
    """The metadata Labelbox shows: every update merged into the last (LABELBOX-side merge)."""
    out: dict[str, Any] = {}
    for update in fake.status_updates(run_id):
        out.update(update.metadata or {})
    return out


async def test_a_status_rejected_for_its_metadata_still_reaches_complete(
    kube, namespace, kubelet: FakeKubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    fake_labelbox.strict_metadata = True  # non-string values: BAD_USER_INPUT
    await make_template(gpus=1)
    start_operator()
    await make_run("strict")
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=strict")
    await kubelet.schedule(pod)
    for stage in ("export", "prepare", "train"):
        await kubelet.run_stage(pod, stage)
    summary = {"accuracy": 0.91, "rows_rejected": 1}
    await kubelet.succeed(pod, message=json.dumps(summary))
    st = await until_acknowledged(kube, namespace, "strict", "COMPLETE")
    run_id = fake_cuid("strict")
    await statuses_settle(fake_labelbox, run_id, FULL)
    updates = fake_labelbox.status_updates(run_id)
    assert all(isinstance(v, str) for u in updates for v in (u.metadata or {}).values())
    final = updates[-1].metadata or {}
    assert final["gpus"] == "1" and final["summary.rows_rejected"] == "1"
    assert st["labelbox"]["metadataForm"] == "flat"
    assert "BAD_USER_INPUT" in st["labelbox"]["metadataRejected"]
    rejected = [
        r
        for r in fake_labelbox.requests
        if r.failure is None and r.field == "updateTrainingPipeline"
    ]
    assert len(rejected) == len(updates) + 1  # one call rejected, each later one flat at once
    await events_eventually(
        kube,
        namespace,
        "involvedObject.name=strict,type=Warning",
        lambda es: "LabelboxMetadataRejected" in {e["reason"] for e in es},
    )


async def test_a_cleared_message_does_not_survive_labelbox_s_merge(
    kube, namespace, kubelet: FakeKubelet, fake_labelbox, start_operator, make_template, make_run
) -> None:
    await make_template()
    start_operator()
    await make_run("cleared")
    run_id = fake_cuid("cleared")
    [pod] = await kubelet.wait_for_pods(f"{LABEL_MODEL_RUN}=cleared")
    msg = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    await kubelet.unschedulable(pod, msg)
    await statuses_settle(fake_labelbox, run_id, ["EXPORTING_DATA"])
    assert msg in merged(fake_labelbox, run_id)["message"]
    await kubelet.schedule(pod)
    for stage in ("export", "prepare", "train"):
        await kubelet.run_stage(pod, stage)
    await kubelet.succeed(pod, message=json.dumps({"accuracy": 0.5}))
    await until_acknowledged(kube, namespace, "cleared", "COMPLETE")
    shown = merged(fake_labelbox, run_id)
    assert shown["message"] == "" and shown["phase"] == "Succeeded"
    # Every call names the operator in Labelbox's telemetry header (the SDK's own guess walks the
    # call stack on each request, ~23 ms of CPU per status report).
    assert {r.sdk_method for r in fake_labelbox.requests if r.path.endswith("/graphql")} == {
        SDK_METHOD
    }
