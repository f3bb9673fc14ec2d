"""The catalogue and admission on the real API server, through the real webhook app and the
real operator process: what Labelbox lists is what the Job is built from."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from lbtrain.kube import EVENTS, JOBS, MODELRUNS, TRAININGTEMPLATES, KubeClient, NotFound
from lbtrain.resources.names import LABEL_MODEL_RUN
from lbtrain_dev.fake_labelbox import FakeLabelbox
from lbtrain_dev.ids import fake_cuid
from lbtrain_dev.testbed import ControlPlane
from lbtrain_webhook.app import CACHE, make_app
from lbtrain_webhook.settings import Settings
from lbtrain_webhook.signature import sign

from .test_operator_lifecycle import events_eventually, until

pytestmark = [pytest.mark.testbed, pytest.mark.usefixtures("crds", "lbsecret")]

SECRET = "catalogue-test-secret-not-real"
IMAGE = "127.0.0.1:9/lbtrain/trainer:test"  # a closed port: nothing is ever pulled


def signed(body: bytes) -> dict[str, str]:
    return {"X-Hub-Signature": sign(SECRET.encode(), body), "Content-Type": "application/json"}


@pytest.fixture
async def webhook(
    aiohttp_client: Any, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> Callable[[], Any]:
    """Start the real webhook app on the test's namespace (after its templates exist)."""
    secret = tmp_path / "secret"
    secret.write_text(SECRET)

    async def start() -> TestClient[Any, Any]:
        settings = Settings(
            namespace=namespace,
            kubeconfig=str(control_plane.kubeconfig),
            metrics_port=0,
            secret_files=(secret,),
        )
        app = make_app(settings)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        await app[CACHE].wait_synced(15)
        return client

    return start


async def template(kube: KubeClient, ns: str, name: str, model_type: str, **spec: Any) -> None:
    body = {
        "metadata": {"name": name},
        "spec": {"modelType": model_type, "image": IMAGE, "gpus": 0, **spec},
    }
    await kube.create(TRAININGTEMPLATES, body, ns)


async def post_run(client: TestClient[Any, Any], fake: FakeLabelbox, run: str, name: str) -> str:
    """Press Train Model: a signed POST as Labelbox sends it; answer the ModelRun's name."""
    run_id = fake_cuid(run)
    fake.add_model_run(run_id)
    body = json.dumps({"modelRunId": run_id, "modelType": name}).encode()
    resp = await client.post("/model_run", data=body, headers=signed(body))
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["name"])


async def job_of(kube: KubeClient, ns: str, run: str, timeout: float = 30) -> dict[str, Any]:
    for _ in range(int(timeout * 10)):
        jobs = (await kube.list(JOBS, ns, label_selector=f"{LABEL_MODEL_RUN}={run}"))["items"]
        if jobs:
            return dict(jobs[0])
        await asyncio.sleep(0.1)
    raise AssertionError(f"no Job for {run}")


def train_container(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"]["containers"][0])


async def test_two_models_for_one_task_each_build_their_own_job(
    kube, namespace, webhook, fake_labelbox, start_operator
) -> None:
    bert, fast = "Text classification - BERT base", "Text classification - fast"
    task = {"task": "text_single_classification"}
    await template(
        kube,
        namespace,
        "bert",
        bert,
        description="accurate",
        image=f"{IMAGE}-bert",
        resources={"limits": {"memory": "8Gi"}},
        **task,
    )
    await template(
        kube,
        namespace,
        "fast",
        fast,
        description="small",
        image=f"{IMAGE}-fast",
        resources={"limits": {"memory": "2Gi"}},
        **task,
    )
    start_operator()
    client = await webhook()

    resp = await client.get("/models", headers=signed(b""))
    assert await resp.json() == {bert: {"description": "accurate"}, fast: {"description": "small"}}

    for run, name, tt, memory in (("r-bert", bert, "bert", "8Gi"), ("r-fast", fast, "fast", "2Gi")):
        mr_name = await post_run(client, fake_labelbox, run, name)
        mr = await kube.get(MODELRUNS, mr_name, namespace)
        assert mr["spec"]["template"] == {"name": tt, "generation": 1}
        job = await job_of(kube, namespace, mr_name)
        train = train_container(job)
        assert train["image"] == f"{IMAGE}-{tt}"
        assert train["resources"]["limits"]["memory"] == memory
        env = {e["name"]: e.get("value") for e in train["env"]}
        assert env["LBTRAIN_MODEL_TYPE"] == "text_single_classification"
        st = await until(kube, namespace, mr_name, lambda s: s.get("templateName"))
        assert (st["templateName"], st["templateGeneration"], st["task"]) == (
            tt,
            1,
            "text_single_classification",
        )


async def test_a_contested_name_has_one_winner_for_labelbox_and_the_job(
    kube, namespace, webhook, fake_labelbox, start_operator, kubectl
) -> None:
    # The older template is last by name, so neither name order nor list order can pass this.
    await template(kube, namespace, "zeta", "ner", description="older", image=f"{IMAGE}-zeta")
    await asyncio.sleep(1.1)  # creationTimestamp has whole seconds
    await template(kube, namespace, "alpha", "ner", description="younger", image=f"{IMAGE}-alpha")
    start_operator()
    client = await webhook()

    resp = await client.get("/models", headers=signed(b""))
    assert await resp.json() == {"ner": {"description": "older"}}
    by_webhook = await post_run(client, fake_labelbox, "contested", "ner")
    assert train_container(await job_of(kube, namespace, by_webhook))["image"] == f"{IMAGE}-zeta"

    # A run made by hand (no recorded template) gets the same winner from the operator.
    by_hand_id = fake_cuid("by-hand")
    fake_labelbox.add_model_run(by_hand_id)
    await kube.create(
        MODELRUNS,
        {"metadata": {"name": "by-hand"}, "spec": {"modelRunId": by_hand_id, "modelType": "ner"}},
        namespace,
    )
    assert train_container(await job_of(kube, namespace, "by-hand"))["image"] == f"{IMAGE}-zeta"

    # The loser says why, on its condition, in a Warning, and in `kubectl get tt`.
    warnings = await events_eventually(
        kube,
        namespace,
        "involvedObject.name=alpha,type=Warning",
        lambda items: any(e["reason"] == "NameConflict" for e in items),
    )
    assert "zeta" in warnings[0]["message"]
    alpha = await kube.wait_for(
        TRAININGTEMPLATES, "alpha", namespace, lambda t: bool(t.get("status")), timeout=15
    )
    [listed] = alpha["status"]["conditions"]
    assert (listed["type"], listed["status"], listed["reason"]) == (
        "Listed",
        "False",
        "NameConflict",
    )
    shown = kubectl("get", "tt", "-n", namespace)
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: line for line in shown.stdout.splitlines()[1:]}
    assert "NameConflict" in rows["alpha"] and "False" in rows["alpha"]
    assert "True" in rows["zeta"] and "ner" in rows["zeta"]
    zeta_warnings = await kube.list(
        EVENTS, namespace, field_selector="involvedObject.name=zeta,type=Warning"
    )
    assert zeta_warnings["items"] == []

    # The winner goes: the other template takes the name, and says so.
    await kube.delete(TRAININGTEMPLATES, "zeta", namespace)
    await kube.wait_for(
        TRAININGTEMPLATES,
        "alpha",
        namespace,
        lambda t: t["status"]["conditions"][0]["status"] == "True",
        timeout=15,
    )


async def test_a_template_setting_a_reserved_variable_fails_the_run_with_no_job(
    kube, namespace, webhook, fake_labelbox, start_operator
) -> None:
    await template(
        kube, namespace, "sneaky", "ner", env=[{"name": "LBTRAIN_ARTIFACTS", "value": "/tmp/x"}]
    )
    start_operator()
    client = await webhook()
    name = await post_run(client, fake_labelbox, "sneaky-run", "ner")
    st = await until(kube, namespace, name, lambda s: s.get("phase") == "Failed")
    assert st["reason"] == "ReservedEnvironment"
    assert "LBTRAIN_ARTIFACTS" in st["message"] and "sneaky" in st["message"]
    jobs = await kube.list(JOBS, namespace, label_selector=f"{LABEL_MODEL_RUN}={name}")
    assert jobs["items"] == []
    for _ in range(100):
        updates = fake_labelbox.status_updates(fake_cuid("sneaky-run"))
        if updates:
            break
        await asyncio.sleep(0.1)
    assert updates[-1].status == "FAILED"
    assert "LBTRAIN_ARTIFACTS" in (updates[-1].error_message or "")


async def test_a_template_edited_or_deleted_while_its_runs_wait(
    kube, namespace, webhook, fake_labelbox, start_operator
) -> None:
    """The operator is down while runs arrive (they wait): an edit is built at its new
    generation, and said so; a deleted template fails its run; once a Job exists, edits no
    longer touch it."""
    await template(kube, namespace, "edited", "ner", image=f"{IMAGE}-v1")
    await template(kube, namespace, "deleted", "bounding_box")
    client = await webhook()
    waits = await post_run(client, fake_labelbox, "waits", "ner")
    orphan = await post_run(client, fake_labelbox, "orphan", "bounding_box")
    assert (await kube.get(MODELRUNS, waits, namespace))["spec"]["template"]["generation"] == 1

    await kube.patch(TRAININGTEMPLATES, "edited", {"spec": {"image": f"{IMAGE}-v2"}}, namespace)
    await kube.delete(TRAININGTEMPLATES, "deleted", namespace)
    start_operator()

    job = await job_of(kube, namespace, waits)
    assert train_container(job)["image"] == f"{IMAGE}-v2"
    st = await until(kube, namespace, waits, lambda s: s.get("templateGeneration"))
    assert (st["templateName"], st["templateGeneration"]) == ("edited", 2)
    created = await events_eventually(
        kube,
        namespace,
        f"involvedObject.name={waits},reason=JobCreated",
        lambda items: bool(items),
    )
    assert "generation 2" in created[0]["message"] and "(generation 1)" in created[0]["message"]

    st = await until(kube, namespace, orphan, lambda s: s.get("phase") == "Failed")
    assert st["reason"] == "TemplateMissing"
    assert "TrainingTemplate deleted" in st["message"] and "no longer exists" in st["message"]
    with pytest.raises(NotFound):
        await kube.get(JOBS, f"{orphan}-train", namespace)

    await kube.patch(TRAININGTEMPLATES, "edited", {"spec": {"image": f"{IMAGE}-v3"}}, namespace)
    await asyncio.sleep(3)  # more than a resync: the run's passes saw the edit, and left the Job
    job = await kube.get(JOBS, job["metadata"]["name"], namespace)
    assert train_container(job)["image"] == f"{IMAGE}-v2"
