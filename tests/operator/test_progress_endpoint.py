"""The progress endpoint against a real kube-apiserver: its TokenReview of real projected
service-account tokens (issued by the API server, bound to a pod and to the progress audience)
decides who may report. A pod reports for its own run; a report for another run, one without a
token, one with a forged token, one with a token for another audience or one not bound to a pod
is refused, and none of them changes any ModelRun (docs/progress.md)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from lbtrain import contract
from lbtrain.kube import MODELRUNS, PODS, KubeClient, NotFound
from lbtrain_dev.liveprogress import issue_token, run_with_pod
from lbtrain_dev.testbed.controlplane import free_port
from lbtrain_operator import livprogress as lp
from lbtrain_operator import progress_server

pytestmark = [pytest.mark.testbed, pytest.mark.usefixtures("crds")]


class Endpoint:
    def __init__(self, kube: KubeClient) -> None:
        self.woken: list[tuple[str, str]] = []
        self.endpoint = progress_server.ProgressEndpoint(
            kube, lambda key, _progress: self.woken.append(key)
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{contract.PROGRESS_PATH}"

    async def post(self, body: Any, token: str | None) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url, json=body, headers=headers) as answer,
        ):
            return answer.status, await answer.json()


@pytest.fixture
async def endpoint(kube: KubeClient) -> AsyncIterator[Endpoint]:
    server = Endpoint(kube)
    runner = await progress_server.start(server.endpoint, "127.0.0.1", server.port)
    yield server
    await runner.cleanup()


def report(run: dict[str, Any], epoch: int = 2, second: int = 0) -> dict[str, Any]:
    measured = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60 - second)
    return {
        "modelRunId": run["spec"]["modelRunId"],
        "epoch": epoch,
        "epochs": 4,
        "step": 10 * epoch,
        "steps": 40,
        "trainLoss": 0.25,
        "validationMetric": None,
        "validationValue": None,
        "examplesPerSecond": 33.0,
        "etaSeconds": 20.0,
        "measuredAt": measured.isoformat(),
    }


async def versions(kube: KubeClient, namespace: str) -> dict[str, str]:
    listed = await kube.list(MODELRUNS, namespace)
    return {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in listed["items"]}


async def test_a_pod_reports_for_its_own_run_and_the_run_shows_it(
    kube: KubeClient, namespace: str, endpoint: Endpoint
) -> None:
    a = await run_with_pod(kube, namespace, "run-a")
    code, body = await endpoint.post(report(a["run"]), a["token"])
    assert (code, body) == (202, {"accepted": True})
    stored = (await kube.get(MODELRUNS, "run-a", namespace))["status"]["progress"]
    assert stored["text"] == "epoch 2/4 · 50% · ETA 20s"
    assert (stored["epoch"], stored["step"]) == (2, 20)
    assert stored["pod"] == a["pod"]["metadata"]["name"]
    assert endpoint.woken == [(namespace, "run-a")]
    # A late retry of an older report does not take the run back.
    code, _ = await endpoint.post(report(a["run"], epoch=1, second=-5), a["token"])
    assert code == 202
    again = (await kube.get(MODELRUNS, "run-a", namespace))["status"]["progress"]
    assert again["epoch"] == 2 and endpoint.woken == [(namespace, "run-a")]


async def test_reports_that_are_not_the_pods_own_are_refused_and_change_no_run(
    kube: KubeClient,
    namespace: str,
    endpoint: Endpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = await run_with_pod(kube, namespace, "run-a")
    b = await run_with_pod(kube, namespace, "run-b")
    before = await versions(kube, namespace)
    header, payload, signature = a["token"].split(".")
    forged_signature = f"{header}.{payload}.{signature[:-4]}AAAA"
    # The same claims signed by no key the API server knows: a self-made token.
    self_made = f"{header}.{payload}.c2lnbmVkLWJ5LW5vYm9keQ"
    api_audience = await issue_token(kube, namespace, a["pod"], "https://kubernetes.default.svc")
    unbound = await issue_token(kube, namespace, None)
    cases = [
        ("another run", report(b["run"]), a["token"], 403, lp.OTHER_RUN),
        ("no token", report(a["run"]), None, 401, lp.MISSING_TOKEN),
        ("forged signature", report(a["run"]), forged_signature, 401, lp.TOKEN_REFUSED),
        ("self-made token", report(a["run"]), self_made, 401, lp.TOKEN_REFUSED),
        ("API audience", report(a["run"]), api_audience, 401, lp.TOKEN_REFUSED),
        ("not bound to a pod", report(a["run"]), unbound, 403, lp.NOT_POD_BOUND),
        ("garbage", report(a["run"]), "not-a-token", 401, lp.TOKEN_REFUSED),
        ("malformed report", {"modelRunId": "x"}, a["token"], 400, lp.BAD_REPORT),
    ]
    with caplog.at_level("WARNING", logger="lbtrain.operator.progress"):
        for why, body, token, want_code, want_reason in cases:
            code, answer = await endpoint.post(body, token)
            assert (code, answer["reason"]) == (want_code, want_reason), why
    assert await versions(kube, namespace) == before
    assert endpoint.woken == []
    counted = endpoint.endpoint.metrics.progress_reports
    assert counted.labels(lp.OTHER_RUN)._value.get() == 1
    assert counted.labels(lp.TOKEN_REFUSED)._value.get() == 4
    assert counted.labels(lp.ACCEPTED)._value.get() == 0
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert lp.OTHER_RUN in logged and f"{namespace}/{a['pod']['metadata']['name']}" in logged
    for token in (a["token"], forged_signature, unbound, api_audience):
        assert token not in logged  # refused, logged, never with the token


async def test_a_deleted_pods_token_no_longer_reports(
    kube: KubeClient, namespace: str, endpoint: Endpoint
) -> None:
    a = await run_with_pod(kube, namespace, "run-a")
    before = await versions(kube, namespace)
    await kube.delete(PODS, a["pod"]["metadata"]["name"], namespace, grace_period_seconds=0)
    for _ in range(100):  # a pod on no node goes at once
        try:
            await kube.get(PODS, a["pod"]["metadata"]["name"], namespace)
        except NotFound:
            break
        await asyncio.sleep(0.1)
    code, answer = await endpoint.post(report(a["run"]), a["token"])
    # The API server invalidates a token bound to a deleted pod; were it still valid, the
    # endpoint finds no pod of that uid.
    assert code in (401, 403) and answer["reason"] in (lp.TOKEN_REFUSED, lp.POD_GONE)
    assert await versions(kube, namespace) == before
