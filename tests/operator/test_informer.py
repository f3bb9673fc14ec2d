"""The pod and Job store the reconcile passes read: pure folding of events and listings, and the
informer itself against the real API server (and, for a compacted watch, a real HTTP server)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from lbtrain.kube import JOBS, PODS, KubeClient, KubeConfig
from lbtrain.resources.names import LABEL_MODEL_RUN
from lbtrain_operator.informer import Informer, RunObjects, trim
from tests.operator import builders as b


def labelled(
    obj: dict[str, Any], run: str = "mr-1", ns: str = "ns", rv: str = "1"
) -> dict[str, Any]:
    obj = json.loads(json.dumps(obj))
    obj["metadata"].update(
        namespace=ns, labels={LABEL_MODEL_RUN: run}, resourceVersion=rv, managedFields=[{"x": 1}]
    )
    return obj


def recording_store() -> tuple[RunObjects, list[tuple[str, str]]]:
    woken: list[tuple[str, str]] = []
    return RunObjects(on_change=woken.append), woken


def test_trim_keeps_what_a_pass_reads_and_drops_the_bulk() -> None:
    job = labelled(b.job(("Complete", "Done")))
    job["spec"]["template"] = {"spec": {"containers": [{"name": "train", "env": ["x"] * 50}]}}
    kept = trim("Job", job)
    assert kept["spec"] == {"backoffLimit": 2, "activeDeadlineSeconds": 600}
    assert kept["status"] == job["status"]
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["labels"] == {LABEL_MODEL_RUN: "mr-1"}

    pod = labelled(b.pod(train=b.running("train")))
    pod["spec"]["containers"] = [{"name": "train"}]
    kept = trim("Pod", pod)
    assert kept["spec"] == {"nodeName": "gpu-node-1"}
    assert kept["status"]["containerStatuses"] == pod["status"]["containerStatuses"]


def test_events_are_filed_under_their_run_and_wake_it() -> None:
    store, woken = recording_store()
    pod = labelled(b.pod("mr-1-train-a"))
    assert store.apply("Pod", "ADDED", pod) == ("ns", "mr-1")
    assert store.apply("Job", "ADDED", labelled(b.job())) == ("ns", "mr-1")
    assert [p["metadata"]["name"] for p in store.pods(("ns", "mr-1"))] == ["mr-1-train-a"]
    assert store.job(("ns", "mr-1")) is not None
    assert store.pods(("ns", "other")) == [] and store.job(("other", "mr-1")) is None

    store.apply("Pod", "DELETED", pod)
    assert store.pods(("ns", "mr-1")) == []
    assert woken == [("ns", "mr-1")] * 3

    unlabelled = b.pod("stranger")
    assert store.apply("Pod", "ADDED", unlabelled) is None
    assert len(woken) == 3 and len(store) == 1


def test_deleting_an_old_job_of_the_same_run_name_keeps_the_current_one() -> None:
    store, _ = recording_store()
    current = labelled(b.job())
    store.apply("Job", "ADDED", current)
    old = labelled(b.job())
    old["metadata"]["name"] = "mr-1-train-of-a-deleted-run"
    store.apply("Job", "DELETED", old)
    assert store.job(("ns", "mr-1")) is not None


def test_a_relisting_drops_vanished_objects_and_wakes_only_runs_that_changed() -> None:
    store, woken = recording_store()
    store.replace(
        "Pod",
        "ns",
        [
            labelled(b.pod("a-pod"), run="a", rv="1"),
            labelled(b.pod("b-pod"), run="b", rv="1"),
        ],
    )
    store.replace("Pod", "elsewhere", [labelled(b.pod("c-pod"), run="c", ns="elsewhere")])
    woken.clear()

    # b's pod vanished while the watch was down, a's is unchanged, d's is new.
    store.replace(
        "Pod",
        "ns",
        [labelled(b.pod("a-pod"), run="a", rv="1"), labelled(b.pod("d-pod"), run="d", rv="7")],
    )
    assert sorted(woken) == [("ns", "b"), ("ns", "d")]
    assert store.pods(("ns", "b")) == []
    assert store.pods(("elsewhere", "c")), "a listing of one namespace leaves the others alone"


def test_the_store_is_synced_once_every_informer_listed() -> None:
    store = RunObjects()
    store.expect_sync()
    store.expect_sync()
    store.mark_synced()
    assert not store.synced.is_set()
    store.mark_synced()
    assert store.synced.is_set()


async def _until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def _pod_body(name: str, run: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {LABEL_MODEL_RUN: run}},
        "spec": {"containers": [{"name": "train", "image": "busybox"}]},
    }


async def test_informer_follows_the_api_server(kube: KubeClient, namespace: str) -> None:
    # Present before the informer starts: found by its listing.
    await kube.create(PODS, _pod_body("early", "mr-a"), namespace)
    await kube.create(
        PODS, {**_pod_body("unrelated", "x"), "metadata": {"name": "unrelated"}}, namespace
    )
    store, woken = recording_store()
    informers = [Informer(kube, res, namespace, store, watch_timeout_s=5) for res in (PODS, JOBS)]
    tasks = [asyncio.create_task(i.run()) for i in informers]
    try:
        await asyncio.wait_for(store.synced.wait(), 20)
        assert [p["metadata"]["name"] for p in store.pods((namespace, "mr-a"))] == ["early"]
        assert len(store) == 1, "objects without the run label are not held"

        # Created, changed and deleted while it watches.
        job = {
            "metadata": {"name": "mr-b-train", "labels": {LABEL_MODEL_RUN: "mr-b"}},
            "spec": {
                "suspend": True,
                "template": {
                    "metadata": {"labels": {LABEL_MODEL_RUN: "mr-b"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "train", "image": "busybox"}],
                    },
                },
            },
        }
        await kube.create(JOBS, job, namespace)
        await _until(lambda: store.job((namespace, "mr-b")) is not None)
        assert store.job((namespace, "mr-b"))["spec"]["suspend"] is True  # type: ignore[index]
        await kube.patch(JOBS, "mr-b-train", {"spec": {"suspend": False}}, namespace)
        await _until(lambda: store.job((namespace, "mr-b"))["spec"]["suspend"] is False)  # type: ignore[index]
        await kube.delete(PODS, "early", namespace, grace_period_seconds=0)
        await _until(lambda: store.pods((namespace, "mr-a")) == [])
        assert (namespace, "mr-b") in woken and (namespace, "mr-a") in woken

        # Past its watch timeout the informer re-opens the watch and keeps following.
        await asyncio.sleep(6)
        await kube.create(PODS, _pod_body("late", "mr-a"), namespace)
        await _until(lambda: len(store.pods((namespace, "mr-a"))) == 1)
        for informer in informers:
            informer.check(stale_after_s=30)
    finally:
        for task in tasks:
            task.cancel()


@pytest.fixture
async def compacting_server(aiohttp_server: Any) -> tuple[str, list[str]]:
    """An HTTP server speaking list+watch for pods whose first watch says 410 Gone, as an API
    server does after etcd compacted the watch's resourceVersion away."""
    calls: list[str] = []

    async def pods(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch"):
            calls.append("watch")
            resp = web.StreamResponse()
            await resp.prepare(request)
            if calls.count("watch") == 1:
                gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
                await resp.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            else:
                await asyncio.sleep(30)
            return resp
        calls.append("list")
        version = str(len(calls))
        items = [labelled(b.pod(f"pod-{version}"), run="mr-1", rv=version)]
        return web.json_response({"metadata": {"resourceVersion": version}, "items": items})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/pods", pods)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}", calls


async def test_a_compacted_watch_lists_again(compacting_server: tuple[str, list[str]]) -> None:
    url, calls = compacting_server
    store, _ = recording_store()
    async with KubeClient(KubeConfig(server=url)) as kube:
        task = asyncio.create_task(Informer(kube, PODS, "ns", store).run())
        try:
            await _until(lambda: calls[:4] == ["list", "watch", "list", "watch"])
            # The second listing replaced the first: the pod of the first one is gone.
            assert [p["metadata"]["name"] for p in store.pods(("ns", "mr-1"))] == ["pod-3"]
        finally:
            task.cancel()


async def test_probe_fails_when_an_informer_hears_nothing() -> None:
    store = RunObjects()
    # Nothing listens on this port: the informer can never reach the API server.
    async with KubeClient(KubeConfig(server="http://127.0.0.1:9")) as kube:
        informer = Informer(kube, PODS, "ns", store)
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.sleep(0.3)
            informer.check(stale_after_s=60)  # young enough still
            with pytest.raises(RuntimeError, match="watch of pods in ns silent for"):
                informer.check(stale_after_s=0.1)
            assert not store.synced.is_set()
        finally:
            task.cancel()
