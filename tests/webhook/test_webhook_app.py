"""The webhook over real HTTP, against the testbed's real kube-apiserver: every answer it gives."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lbtrain.kube import MODELRUNS, KubeClient
from lbtrain_dev.ids import fake_cuid
from lbtrain_webhook.app import METRICS
from lbtrain_webhook.metrics import make_metrics_app
from lbtrain_webhook.naming import short_hash
from lbtrain_webhook.signature import sign

from .helpers import SECRET, SEED_TYPES, run_body, signed_headers, template_body

pytestmark = pytest.mark.testbed
SIGNATURE_RE = re.compile(r"sha1=[0-9a-f]{40}")


@pytest.fixture(autouse=True)
def no_leaks(caplog: pytest.LogCaptureFixture):
    """No secret, no signature and no stack trace in any log line of any test here."""
    caplog.set_level(logging.DEBUG)
    yield
    text = caplog.text
    assert SECRET not in text
    assert not SIGNATURE_RE.search(text)
    assert "Traceback" not in text


def clean(text: str) -> str:
    assert SECRET not in text
    assert not SIGNATURE_RE.search(text)
    assert "Traceback" not in text
    return text


async def answer(resp) -> tuple[int, Any]:
    text = clean(await resp.text())
    assert resp.headers["Content-Type"].startswith("application/json")
    return resp.status, json.loads(text)


async def post(client, body: bytes, **headers: str) -> tuple[int, Any]:
    return await answer(
        await client.post("/model_run", data=body, headers=signed_headers(body, **headers))
    )


async def model_runs(kube: KubeClient, namespace: str) -> list[dict[str, Any]]:
    return list((await kube.list(MODELRUNS, namespace)).get("items") or [])


# --- GET /models ----------------------------------------------------------------------------------
async def test_models_lists_templates_exactly(client):
    status, doc = await answer(
        await client.get("/models", headers={"X-Hub-Signature": sign(SECRET.encode(), b"")})
    )
    assert status == 200
    assert doc == {k: {"description": v} for k, v in SEED_TYPES.items()}
    assert "Text_multi_classification" in doc  # the capital T round-trips


async def test_models_needs_the_signature_of_the_empty_body(client):
    answers = []
    for headers in (
        {},
        {"X-Hub-Signature": "sha1=nothex"},
        {"X-Hub-Signature": sign(b"wrong-secret", b"")},
        {"X-Hub-Signature": sign(SECRET.encode(), b"{}")},
    ):
        resp = await client.get("/models", headers=headers)
        answers.append((resp.status, await resp.text()))
    assert {a[0] for a in answers} == {401}
    assert len({a[1] for a in answers}) == 1  # the same answer whatever was wrong
    assert json.loads(answers[0][1])["error"] == "unauthorized"


async def test_template_add_and_remove_show_up(client, kubectl, seeded):
    headers = {"X-Hub-Signature": sign(SECRET.encode(), b"")}
    manifest = {
        "apiVersion": "lbtrain.io/v1alpha1",
        "kind": "TrainingTemplate",
        **template_body("Image_KNN", "added"),
    }
    result = kubectl("apply", "-n", seeded, "-f", "-", input=json.dumps(manifest))
    assert result.returncode == 0, result.stderr

    async def poll(present: bool) -> float:
        started = time.monotonic()
        while time.monotonic() - started < 5:
            doc = await (await client.get("/models", headers=headers)).json()
            if ("Image_KNN" in doc) == present:
                return time.monotonic() - started
            await asyncio.sleep(0.05)
        raise AssertionError(f"Image_KNN present={present} not seen within 5 s")

    assert await poll(True) < 2
    assert kubectl("delete", "-n", seeded, "trainingtemplate", "image-knn").returncode == 0
    assert await poll(False) < 2


# --- POST /model_run: success and idempotency -----------------------------------------------------
async def test_reference_sample_body_creates_a_model_run(client, kube, seeded):
    # Exactly as Labelbox's reference test script builds, signs and sends it (no Content-Type).
    mr_id = "clr8x6y0a00013b6z9k2f7h1e"
    payload = json.dumps({"modelRunId": mr_id, "modelType": "Text_multi_classification"})
    signature = (
        "sha1="
        + __import__("hmac")
        .new(SECRET.encode(), msg=payload.encode(), digestmod="sha1")
        .hexdigest()
    )
    resp = await client.post(
        "/model_run",
        data=payload.encode(),
        headers={"X-Hub-Signature": signature},
        skip_auto_headers=["Content-Type"],
    )
    status, doc = await answer(resp)
    assert status == 201
    assert doc == {"name": mr_id, "namespace": seeded, "modelRunId": mr_id}
    obj = await kube.get(MODELRUNS, mr_id, seeded)
    assert obj["spec"] == {
        "modelRunId": mr_id,
        "modelType": "Text_multi_classification",
        # the template GET /models listed under that name, at the generation the webhook saw
        "template": {"name": "text-multi-classification", "generation": 1},
    }
    assert obj["metadata"]["labels"]["lbtrain.io/model-type"] == "Text_multi_classification"
    assert obj["metadata"]["annotations"]["lbtrain.io/model-run-id"] == mr_id


async def test_repeat_delivery_is_the_same_success_and_creates_nothing(client, kube, seeded):
    body = run_body(
        "9b2f7c1e-3d4a-4b5c-8d6e-7f8091a2b3c4",
        "ner",
        modelId=fake_cuid("model1"),
        organizationId=fake_cuid("org1"),
    )
    first = await post(client, body)
    second = await post(client, body)
    assert first[0] == 201
    assert second[0] == 200
    assert first[1] == second[1]
    runs = await model_runs(kube, seeded)
    assert [r["metadata"]["name"] for r in runs] == ["9b2f7c1e-3d4a-4b5c-8d6e-7f8091a2b3c4"]
    assert runs[0]["spec"]["organizationId"] == fake_cuid("org1")


async def test_same_id_different_body_is_409(client, kube, seeded):
    assert (await post(client, run_body(fake_cuid("run-409"), "ner", modelId=fake_cuid("model1"))))[
        0
    ] == 201
    status, doc = await post(
        client, run_body(fake_cuid("run-409"), "ner", modelId=fake_cuid("model2"))
    )
    assert status == 409
    assert doc["error"] == "conflict"
    assert "modelId" in doc["detail"]
    status, doc = await post(
        client, run_body(fake_cuid("run-409"), "bounding_box", modelId=fake_cuid("model1"))
    )
    assert status == 409
    assert "modelType" in doc["detail"]
    assert len(await model_runs(kube, seeded)) == 1


async def test_concurrent_duplicates_make_exactly_one_model_run(client, kube, seeded):
    body = run_body(fake_cuid("concurrent-run"), "bounding_box", modelId=fake_cuid("model"))
    results = await asyncio.gather(*(post(client, body) for _ in range(20)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 19 + [201]
    assert {json.dumps(doc) for _, doc in results} == {json.dumps(results[0][1])}
    assert len(await model_runs(kube, seeded)) == 1


async def test_uppercase_uuid_is_kept_exactly_under_a_derived_name(client, kube, seeded):
    mr_id = "9B2F7C1E-3D4A-4B5C-8D6E-7F8091A2B3C4"  # RFC 9562 readers accept either case
    status, doc = await post(client, run_body(mr_id, "ner"))
    assert status == 201
    assert doc["name"] == f"mr-{mr_id.lower()[: 63 - 3 - 11]}-{short_hash(mr_id)}"
    assert doc["modelRunId"] == mr_id
    obj = await kube.get(MODELRUNS, doc["name"], seeded)
    assert obj["spec"]["modelRunId"] == mr_id
    assert obj["metadata"]["annotations"]["lbtrain.io/model-run-id"] == mr_id
    assert (await post(client, run_body(mr_id, "ner")))[0] == 200


# Each shape a Labelbox id never has, in each id field: 422 naming the field and the rule.
NOT_LABELBOX_IDS = [
    "../../etc/passwd",  # the escape that prompted the rule
    "ckx0run0000000000000001/..",
    "Ünïcode run ✓ 1",
    "ckx0-run-0000000000000001",  # a cuid has no hyphens
    "CKX0RUN000000000000000001",  # nor capitals
    "1kx0run000000000000000001",  # and starts with a letter
    "c" * 19,  # too short
    "c" * 33,  # too long
    "9b2f7c1e3d4a4b5c8d6e7f8091a2b3c4",  # a UUID without its hyphens
    "{9b2f7c1e-3d4a-4b5c-8d6e-7f8091a2b3c4}",
    "9b2f7c1e-3d4a-4b5c-8d6e-7f8091a2b3cg",
    "ckx0run000000000000000001\n",  # a trailing newline (a bare `$` would let it through)
    "ckx0run 000000000000000001",
]


@pytest.mark.parametrize("field", ["modelRunId", "modelId", "organizationId"])
@pytest.mark.parametrize("bad", NOT_LABELBOX_IDS)
async def test_ids_that_are_not_labelbox_ids_are_refused(client, kube, seeded, field, bad):
    fields = {"modelRunId": fake_cuid("valid-run"), "modelType": "ner", field: bad}
    status, doc = await post(client, json.dumps(fields).encode())
    assert status == 422, doc
    assert doc["error"] == ("invalid_model_run_id" if field == "modelRunId" else "invalid_field")
    assert f"field '{field}' must be a Labelbox id: a cuid" in doc["detail"]
    assert await model_runs(kube, seeded) == []


# --- POST /model_run: refusals --------------------------------------------------------------------
async def test_signature_refusals_are_identical_and_create_nothing(client, kube, seeded):
    body = run_body(fake_cuid("never-created"), "ner")
    compact = body
    spaced = json.dumps(json.loads(body), indent=2).encode()
    cases = [
        {"Content-Type": "application/json"},  # absent
        {"Content-Type": "application/json", "X-Hub-Signature": "sha1=zz"},  # malformed
        {"Content-Type": "application/json", "X-Hub-Signature": sign(b"other", body)},  # wrong key
    ]
    texts = set()
    for headers in cases:
        resp = await client.post("/model_run", data=body, headers=headers)
        assert resp.status == 401
        texts.add(await resp.text())
    # signed over different whitespace than what is sent
    resp = await client.post("/model_run", data=spaced, headers=signed_headers(compact))
    assert resp.status == 401
    texts.add(await resp.text())
    assert len(texts) == 1
    assert await model_runs(kube, seeded) == []


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "invalid_body"),
        (b"[1, 2]", 400, "invalid_body"),
        (b'{"modelRunId": 5, "modelType": "ner"}', 400, "invalid_body"),
        (b'{"modelRunId": "a", "modelType": "ner", "modelId": {"x": 1}}', 400, "invalid_body"),
        (b'{"modelType": "ner"}', 400, "invalid_body"),
        (
            b'{"modelRunId": "ckx0run000000000000000001", "modelType": "text_multi_classification"}',
            422,
            "unknown_model_type",
        ),
        (b'{"modelRunId": "", "modelType": "ner"}', 422, "invalid_model_run_id"),
        (b'{"modelRunId": "a\\u0000b", "modelType": "ner"}', 422, "invalid_model_run_id"),
    ],
)
async def test_bad_bodies(client, kube, seeded, body, status, error):
    got, doc = await post(client, body)
    assert (got, doc["error"]) == (status, error)
    assert set(doc) == {"error", "detail"}
    assert await model_runs(kube, seeded) == []


async def test_unknown_model_type_lists_the_known_ones(client):
    status, doc = await post(client, run_body(fake_cuid("a"), "resnet"))
    assert status == 422
    for known in SEED_TYPES:
        assert known in doc["detail"]


async def test_too_large_by_header_and_by_bytes(client):
    big = run_body(fake_cuid("a"), "ner", padding="x" * 5000)
    status, doc = await post(client, big)
    assert (status, doc["error"]) == (413, "payload_too_large")

    async def chunks():  # no Content-Length: the limit holds on the bytes actually read
        for _ in range(10):
            yield b" " * 1000

    resp = await client.post("/model_run", data=chunks(), headers={"X-Hub-Signature": "sha1=00"})
    assert resp.status == 413


async def test_not_json_is_415(client):
    body = run_body(fake_cuid("a"), "ner")
    status, doc = await post(client, body, **{"Content-Type": "text/plain"})
    assert (status, doc["error"]) == (415, "unsupported_media_type")


async def test_routing_errors_are_json(client):
    status, doc = await answer(await client.get("/nope"))
    assert (status, doc["error"]) == (404, "not_found")
    status, doc = await answer(await client.get("/model_run"))
    assert (status, doc["error"]) == (405, "method_not_allowed")


# --- health, metrics, logs ------------------------------------------------------------------------
async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["templates"] == 3


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a Prometheus exposition, whatever the label order."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


async def test_metrics(client, aiohttp_client):
    await post(client, run_body(fake_cuid("metrics-run"), "ner"))
    await post(client, run_body(fake_cuid("metrics-run"), "ner"))
    await client.get("/models")
    metrics = await aiohttp_client(make_metrics_app(client.app[METRICS]))
    text = await (await metrics.get("/metrics")).text()
    requests = "lbtrain_webhook_requests_total"
    assert sample(text, requests, route="/model_run", method="POST", status="201") == 1
    assert sample(text, requests, route="/model_run", method="POST", status="200") == 1
    assert sample(text, requests, route="/models", method="GET", status="401") == 1
    failures = "lbtrain_webhook_signature_failures_total"
    assert sample(text, failures, route="/models", reason="missing") == 1
    assert sample(text, "lbtrain_webhook_model_runs_created_total", model_type="ner") == 1
    assert sample(text, "lbtrain_webhook_model_run_duplicates_total") == 1
    latency = "lbtrain_webhook_request_duration_seconds_count"
    assert sample(text, latency, route="/model_run") == 2
    assert sample(text, "lbtrain_webhook_templates") == 3
    assert sample(text, "lbtrain_webhook_template_cache_ready") == 1


async def test_every_log_line_about_a_run_carries_its_id(client, caplog):
    caplog.clear()
    await post(client, run_body(fake_cuid("logged-run"), "ner"))
    await post(client, run_body(fake_cuid("logged-run"), "ner", modelId=fake_cuid("changed")))
    await post(client, run_body(fake_cuid("logged-run"), "no-such-type"))
    about = [
        r
        for r in caplog.records
        if r.name.startswith("lbtrain.webhook") and r.getMessage() != "model types changed"
    ]
    assert len(about) >= 3
    assert "ModelRun created" in [r.getMessage() for r in about]
    assert all(getattr(r, "model_run_id", None) == fake_cuid("logged-run") for r in about), [
        r.__dict__ for r in about
    ]


async def test_the_answer_is_sent_before_the_request_is_logged(client):
    """Counting and logging a request come after its answer is written, so they add nothing to
    the caller's wait: here the request line's log handler blocks until the caller has the
    answer (or 5 s), which it can only get while the handler waits if it was already sent."""
    received = threading.Event()
    seen_in_time: list[bool] = []

    class WaitForTheCaller(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "route", None) == "/models":
                seen_in_time.append(received.wait(5))

    def call() -> bytes:
        with socket.create_connection(("127.0.0.1", client.port), timeout=10) as sock:
            sock.sendall(b"GET /models HTTP/1.1\r\nHost: webhook\r\nConnection: close\r\n\r\n")
            head = sock.recv(65536)
            received.set()
            return head

    logger = logging.getLogger("lbtrain.webhook")
    handler = WaitForTheCaller()
    logger.addHandler(handler)
    try:
        head = await asyncio.get_running_loop().run_in_executor(None, call)
    finally:
        logger.removeHandler(handler)
    assert head.startswith(b"HTTP/1.1 401"), head[:100]  # unsigned: refused, logged at INFO
    assert seen_in_time == [True]


# --- secrets --------------------------------------------------------------------------------------
async def test_secret_rotation_without_restart(client, secret_file):
    new = "wh-secret-rotated-2"
    body = run_body(fake_cuid("rotation-run"), "ner")

    async def accepted(secret: str) -> bool:
        resp = await client.get("/models", headers={"X-Hub-Signature": sign(secret.encode(), b"")})
        return bool(resp.status == 200)

    async def until(secret: str, wanted: bool) -> None:
        deadline = time.monotonic() + 5
        while await accepted(secret) != wanted:
            assert time.monotonic() < deadline, f"{secret!r} accepted != {wanted}"
            await asyncio.sleep(0.05)

    assert await accepted(SECRET)
    assert not await accepted(new)
    secret_file.write_text(f"{SECRET}\n{new}\n")
    await until(new, True)
    assert await accepted(SECRET)
    secret_file.write_text(f"{new}\n")
    await until(SECRET, False)
    status, _ = await post(client, body, secret=new)
    assert status == 201
