"""Queue names through a real API server and the real operator, on a cluster without Kueue.

The CRDs store `queueName` as the operator reads it (the run's over the template's) and refuse a
name that cannot be a label value; the operator creates the queued Job (labelled, suspended) and,
with no Kueue to read, says so in the run's status and in Labelbox instead of failing or
retrying forever. A run without a queue gets its Job as always, running at once. The whole run
through a real Kueue is tests/e2e/test_queue.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from lbtrain.kube import JOBS, MODELRUNS, TRAININGTEMPLATES, Invalid, KubeClient
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid
from lbtrain_operator import queueing

from .builders import IMAGE
from .test_operator_lifecycle import until

pytestmark = [pytest.mark.testbed, pytest.mark.usefixtures("crds")]


async def test_the_schema_refuses_a_queue_name_that_is_no_label_value(
    kube: KubeClient, namespace: str
) -> None:
    for bad in ("Team_Queue", "-q", "q" * 64):
        with pytest.raises(Invalid):
            await kube.create(
                TRAININGTEMPLATES,
                {
                    "metadata": {"name": "bad"},
                    "spec": {"modelType": "ner", "image": IMAGE, "queueName": bad},
                },
                namespace,
            )
        with pytest.raises(Invalid):
            await kube.create(
                MODELRUNS,
                {
                    "metadata": {"name": "bad"},
                    "spec": {"modelRunId": fake_cuid("bad"), "modelType": "ner", "queueName": bad},
                },
                namespace,
            )


@pytest.mark.usefixtures("lbsecret")
async def test_a_queued_run_without_kueue_waits_and_says_why_an_unqueued_one_runs(
    kube: KubeClient,
    namespace: str,
    start_operator: Any,
    make_template: Any,
    make_run: Any,
    fake_labelbox: FakeLabelbox,
) -> None:
    await make_template("ner", gpus=0, queueName="team-queue")
    await make_template("image_single_classification", gpus=0)
    start_operator()
    queued = await make_run("queued", model_type="ner", queueName="my-queue")
    plain = await make_run("plain")

    job = await kube.wait_for(JOBS, "queued-train", namespace, lambda _: True, timeout=30)
    assert job["metadata"]["labels"][queueing.QUEUE_LABEL] == "my-queue"  # the run's, not the
    assert job["spec"]["suspend"] is True  # template's; created suspended, for Kueue to admit

    def says_why(st: dict[str, Any]) -> bool:
        return st.get("reason") == "Queued" and "cannot read Kueue's Workloads" in st.get(
            "message", ""
        )

    st = await until(kube, namespace, "queued", says_why, timeout=30)
    assert st["phase"] == "Pending" and "my-queue" in st["message"]
    st = await until(
        kube, namespace, "queued", lambda s: s["labelbox"].get("acknowledged") is not None
    )
    updates = fake_labelbox.status_updates(queued["spec"]["modelRunId"])
    assert [u.status for u in updates][:1] == ["EXPORTING_DATA"]
    meta = updates[-1].metadata or {}
    assert meta["reason"] == "Queued" and "cannot read Kueue's Workloads" in meta["message"]

    job = await kube.wait_for(JOBS, "plain-train", namespace, lambda _: True, timeout=30)
    assert queueing.QUEUE_LABEL not in job["metadata"]["labels"]
    assert "suspend" not in job["spec"] or job["spec"]["suspend"] is False
    st = await until(kube, namespace, "plain", lambda s: s.get("reason") not in (None, ""))
    assert st["reason"] != "Queued"
    assert plain["metadata"]["name"] == "plain"
