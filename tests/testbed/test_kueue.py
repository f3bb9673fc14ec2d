"""Kueue v0.17.0 on the real node queues batch/v1 Jobs as on a shared GPU cluster.

Kueue's manager is built from its Go module (testbed/build-kueue.sh) and installed with its own
Helm chart (lbtrain_dev.testbed.kueue); the Jobs run on the real node from a tiny static image.
A ClusterQueue with room for one Job at a time admits three queued Jobs one after another; the
waiting ones carry Kueue's own `QuotaReserved=False` message and show in its visibility API.
Unlabelled work elsewhere is not held up, and the uninstall leaves nothing behind (a leftover
fail-closed webhook would refuse every Job of every later test).

Real node tests: run them under `flock /tmp/lbtrain-realnode.lock`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lbtrain_dev.testbed import ControlPlane, kueue
from lbtrain_dev.testbed import node as nodeio
from lbtrain_dev.testbed.cli import default_node_store

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

SLEEP_IMAGE = "localhost/lbtrain-sleep:1"
SLEEP_C = r"""
/* A Job's container for the queueing tests: sleeps argv[1] seconds, then exits 0. */
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) { sleep(argc > 1 ? atoi(argv[1]) : 1); return 0; }
"""
JOB_CPU = "300m"
# Room for one Job of JOB_CPU at a time, not two: a second one waits for 100m more.
QUOTA_CPU = "500m"
WAITING = "couldn't assign flavors to pod set main: insufficient unused quota for cpu in flavor {flavor}, 100m more needed"


def sleep_archive(cache: Path) -> Path:
    """The sleeper as a one-layer image, built once (gcc -static), like the node's pause image."""
    archive = cache / f"sleep-{hashlib.sha256(SLEEP_C.encode()).hexdigest()[:12]}.tar"
    if archive.exists():
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    source, binary = cache / "sleep.c", cache / "sleep"
    source.write_text(SLEEP_C)
    subprocess.run(
        ["gcc", "-static", "-Os", "-s", "-o", str(binary), str(source)],
        check=True,
        capture_output=True,
    )
    tmp = archive.with_suffix(".tmp")
    tmp.write_bytes(nodeio.docker_archive(SLEEP_IMAGE, {"sleep": binary.read_bytes()}, ["/sleep"]))
    tmp.rename(archive)
    return archive


@pytest.fixture(scope="module")
def kueue_build(request: pytest.FixtureRequest) -> kueue.KueueBuild:
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        return kueue.ensure_kueue_build()


# Module scope: the machine has one node; other modules start their own.
@pytest.fixture(scope="module")
def plane(testbed_bin: Path, kueue_build: kueue.KueueBuild) -> Iterator[ControlPlane]:
    """A control plane with a real node and Kueue installed; on teardown Kueue is uninstalled
    (again, after the last test did it: the second time must be a clean no-op) and the node
    must leave nothing behind."""
    store = default_node_store()
    with tempfile.TemporaryDirectory(prefix="lbtrain-node-") as run_dir:
        plane = ControlPlane(testbed_bin, Path(run_dir), node_store=store)
        plane.start(die_with_parent=True, timeout=180)
        try:
            nodeio.import_image(plane.node_paths, sleep_archive(store / "sleep"), SLEEP_IMAGE)
            kueue.install(plane, kueue_build)
            yield plane
            kueue.uninstall(plane)
        finally:
            plane.stop()
        left = nodeio.leftovers(Path(run_dir), store)
        assert not left, f"testbed down left behind: {left}"


# --- helpers -----------------------------------------------------------------------------------
def apply(plane: ControlPlane, *docs: dict[str, Any]) -> None:
    plane.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"kind": "List", "apiVersion": "v1", "items": list(docs)}),
        check=True,
    )


def get(plane: ControlPlane, *args: str) -> dict[str, Any]:
    return dict(json.loads(plane.kubectl("get", *args, "-o", "json", check=True).stdout))


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def new_namespace(plane: ControlPlane) -> str:
    name = f"t-{secrets.token_hex(4)}"
    apply(plane, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    wait_for(
        f"{name}'s default ServiceAccount",
        lambda: plane.kubectl("get", "sa", "default", "-n", name).returncode == 0,
    )
    return name


def sleep_job(name: str, seconds: int, queue: str | None, *, suspend: bool) -> dict[str, Any]:
    labels = {kueue.QUEUE_LABEL: queue} if queue else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "suspend": suspend,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "main",
                            "image": SLEEP_IMAGE,
                            "imagePullPolicy": "Never",
                            "args": [str(seconds)],
                            "resources": {"requests": {"cpu": JOB_CPU, "memory": "16Mi"}},
                        }
                    ],
                }
            },
        },
    }


def create_job(plane: ControlPlane, ns: str, job: dict[str, Any]) -> None:
    plane.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(job), check=True)


def job_done(job: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Complete" and c["status"] == "True"
        for c in job.get("status", {}).get("conditions") or []
    )


def workloads(plane: ControlPlane, ns: str) -> dict[str, dict[str, Any]]:
    """The namespace's Workloads by the uid of the Job each one queues."""
    items = get(plane, f"workloads.{kueue.GROUP}", "-n", ns)["items"]
    return {w["metadata"]["labels"].get(kueue.JOB_UID_LABEL, ""): w for w in items}


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == kind), {})


@pytest.fixture
def queue(plane: ControlPlane) -> Iterator[tuple[str, str]]:
    """(namespace, LocalQueue): a ResourceFlavor and a ClusterQueue with room for one Job at a
    time, reached from a fresh namespace through the LocalQueue `user-queue`."""
    ns = new_namespace(plane)
    flavor, cq = f"flavor-{ns}", f"cq-{ns}"
    apply(
        plane,
        {
            "apiVersion": f"{kueue.GROUP}/v1beta2",
            "kind": "ResourceFlavor",
            "metadata": {"name": flavor},
        },
        {
            "apiVersion": f"{kueue.GROUP}/v1beta2",
            "kind": "ClusterQueue",
            "metadata": {"name": cq},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "resourceGroups": [
                    {
                        "coveredResources": ["cpu", "memory"],
                        "flavors": [
                            {
                                "name": flavor,
                                "resources": [
                                    {"name": "cpu", "nominalQuota": QUOTA_CPU},
                                    {"name": "memory", "nominalQuota": "1Gi"},
                                ],
                            }
                        ],
                    }
                ],
            },
        },
        {
            "apiVersion": f"{kueue.GROUP}/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": "user-queue", "namespace": ns},
            "spec": {"clusterQueue": cq},
        },
    )
    wait_for(
        "the LocalQueue to be Active",
        lambda: (
            condition(
                get(plane, f"localqueues.{kueue.GROUP}", "user-queue", "-n", ns), "Active"
            ).get("status")
            == "True"
        ),
    )
    yield ns, "user-queue"
    plane.kubectl("delete", "namespace", ns, "--timeout=120s", timeout=150, check=True)
    plane.kubectl(
        "delete", f"clusterqueues.{kueue.GROUP}", cq, "--timeout=60s", timeout=90, check=True
    )
    plane.kubectl(
        "delete", f"resourceflavors.{kueue.GROUP}", flavor, "--timeout=60s", timeout=90, check=True
    )


# --- tests -------------------------------------------------------------------------------------
def test_the_chart_runs_the_local_image_with_only_the_job_integration(
    testbed_bin: Path, kueue_build: kueue.KueueBuild, tmp_path: Path
) -> None:
    """What `install` hands the chart, rendered by helm: the image built here (never pulled),
    small requests, and only batch/job integrated, so the pod webhook does not fail closed."""
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(kueue.build_values(kueue_build)))
    env = {f"HELM_{d}_HOME": str(tmp_path / d.lower()) for d in ("CONFIG", "CACHE", "DATA")}
    rendered = subprocess.run(
        [str(testbed_bin / "helm"), "template", kueue.RELEASE, str(kueue_build.chart),
         f"--namespace={kueue.NAMESPACE}", f"--values={values}"],
        capture_output=True, text=True, check=True, env={**env, "KUBECONFIG": str(tmp_path / "none")},
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    manager = deployment["spec"]["template"]["spec"]["containers"][0]
    assert manager["image"] == kueue_build.image
    assert manager["imagePullPolicy"] == "IfNotPresent"
    assert manager["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}
    config_map = next(
        d for d in docs if d["kind"] == "ConfigMap" and "manager-config" in d["metadata"]["name"]
    )
    config = yaml.safe_load(config_map["data"]["controller_manager_config.yaml"])
    assert config["integrations"]["frameworks"] == ["batch/job"]
    assert config["webhook"]["port"] == 9443  # the rest of the chart's default is kept
    hooks = {
        h["name"]: h["failurePolicy"]
        for d in docs
        if d["kind"] == "MutatingWebhookConfiguration"
        for h in d["webhooks"]
    }
    assert hooks["mjob.kb.io"] == "Fail"
    assert hooks["mpod.kb.io"] == "Ignore"
    assert hooks["mdeployment.kb.io"] == "Ignore"


def test_three_jobs_run_one_at_a_time_the_waiting_ones_say_why(
    plane: ControlPlane, queue: tuple[str, str], kueue_build: kueue.KueueBuild
) -> None:
    # A second install is an upgrade that changes nothing and still waits for the webhooks.
    kueue.install(plane, kueue_build)
    ns, lq = queue
    names = ["job-a", "job-b", "job-c"]
    for name in names:
        create_job(plane, ns, sleep_job(name, 4, lq, suspend=True))
    uids = {
        j["metadata"]["name"]: j["metadata"]["uid"] for j in get(plane, "jobs", "-n", ns)["items"]
    }
    flavor = f"flavor-{ns}"
    waiting_seen: dict[str, set[str]] = {}
    positions: list[tuple[str, int]] = []
    deadline = time.monotonic() + 240
    while True:
        jobs = {j["metadata"]["name"]: j for j in get(plane, "jobs", "-n", ns)["items"]}
        running = [n for n, j in jobs.items() if not j["spec"].get("suspend") and not job_done(j)]
        assert len(running) <= 1, f"the ClusterQueue has room for one Job, yet {running} run"
        by_uid = workloads(plane, ns)
        pending: list[str] = []
        for name in names:
            reserved = condition(by_uid.get(uids[name], {}), "QuotaReserved")
            if reserved.get("status") == "False" and reserved.get("reason") == "Pending":
                waiting_seen.setdefault(name, set()).add(reserved["message"])
                pending.append(name)
        if len(pending) == 2 and not positions:
            raw = plane.kubectl(
                "get", "--raw",
                f"/apis/{kueue.VISIBILITY_GROUP}/v1beta2/namespaces/{ns}/localqueues/{lq}/pendingworkloads",
                check=True,
            ).stdout  # fmt: skip
            listed = sorted(
                (w["positionInLocalQueue"], w["metadata"]["ownerReferences"][0]["name"])
                for w in json.loads(raw)["items"]
            )
            if len(listed) == 2:  # else one was admitted between the reads: ask again
                positions = [(name, position) for position, name in listed]
                assert [position for position, _ in listed] == [0, 1]
                assert {name for _, name in listed} <= set(names)
        if all(job_done(j) for j in jobs.values()):
            break
        assert time.monotonic() < deadline, f"not all Jobs completed: {jobs.keys()} {running}"
        time.sleep(0.5)
    # Two of the three waited, each with Kueue's own words for why.
    assert len(waiting_seen) >= 2, waiting_seen
    for name, messages in waiting_seen.items():
        assert WAITING.format(flavor=flavor) in messages, (name, messages)
    assert positions, "the visibility API never listed the two waiting Jobs"
    # Each ran in turn: no two Jobs' run times overlap.
    spans = sorted((j["status"]["startTime"], j["status"]["completionTime"]) for j in jobs.values())
    for (_, done), (start, _) in itertools.pairwise(spans):
        assert start >= done, f"Jobs overlapped: {spans}"

    # Kueue saw each Job through: its Workload is Finished.
    def finished() -> bool:
        by_uid = workloads(plane, ns)
        return all(condition(by_uid[uids[n]], "Finished").get("status") == "True" for n in names)

    wait_for("every Workload to be Finished", finished, timeout=30)


def test_deleting_a_waiting_job_deletes_its_workload(
    plane: ControlPlane, queue: tuple[str, str]
) -> None:
    ns, lq = queue
    create_job(plane, ns, sleep_job("holder", 120, lq, suspend=True))
    create_job(plane, ns, sleep_job("waiter", 1, lq, suspend=True))
    uid = get(plane, "job", "waiter", "-n", ns)["metadata"]["uid"]

    def waiting() -> bool:
        reserved = condition(workloads(plane, ns).get(uid, {}), "QuotaReserved")
        return reserved.get("status") == "False" and reserved.get("reason") == "Pending"

    wait_for("the second Job's Workload to wait for quota", waiting)
    assert get(plane, "job", "waiter", "-n", ns)["spec"]["suspend"] is True
    plane.kubectl("delete", "job", "waiter", "-n", ns, "--cascade=background", check=True)
    wait_for("the deleted Job's Workload to be gone", lambda: uid not in workloads(plane, ns))
    holder = get(plane, "job", "holder", "-n", ns)
    assert holder["spec"]["suspend"] is False and not job_done(holder)


def test_a_job_without_a_queue_elsewhere_runs_untouched(
    plane: ControlPlane, queue: tuple[str, str]
) -> None:
    queued_ns, lq = queue
    # The queue is full: a queued Job holds all of it.
    create_job(plane, queued_ns, sleep_job("holder", 120, lq, suspend=True))
    wait_for(
        "the queued Job to be admitted",
        lambda: get(plane, "job", "holder", "-n", queued_ns)["spec"]["suspend"] is False,
    )
    other = new_namespace(plane)
    try:
        create_job(plane, other, sleep_job("plain", 1, None, suspend=False))
        wait_for(
            "the unqueued Job to complete",
            lambda: job_done(get(plane, "job", "plain", "-n", other)),
            timeout=90,
        )
        assert workloads(plane, other) == {}, "Kueue made a Workload for a Job that names no queue"
    finally:
        plane.kubectl("delete", "namespace", other, "--timeout=120s", timeout=150, check=True)


def test_uninstall_leaves_nothing_and_jobs_run_again(plane: ControlPlane) -> None:
    assert kueue.leftovers(plane), "Kueue should be installed before this test"
    kueue.uninstall(plane)
    assert kueue.leftovers(plane) == []
    ns = new_namespace(plane)
    try:
        # The label names a queue nobody serves any more: no webhook refuses or suspends it.
        create_job(plane, ns, sleep_job("after", 1, "user-queue", suspend=False))
        wait_for(
            "a Job after the uninstall to complete",
            lambda: job_done(get(plane, "job", "after", "-n", ns)),
            timeout=90,
        )
    finally:
        plane.kubectl("delete", "namespace", ns, "--timeout=120s", timeout=150, check=True)
