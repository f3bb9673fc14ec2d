"""The local pod runner plays the kubelet for real processes: stages in order on a shared
workspace, environment from the pod spec, exit codes and termination messages written back."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from lbtrain.kube import JOBS, PODS, SECRETS, KubeClient, NotFound
from lbtrain.resources.names import LABEL_MODEL_RUN
from lbtrain_dev.testbed.podrunner import LocalPodRunner, map_trainer_image

pytestmark = pytest.mark.testbed

# Each container runs a Python snippet: `python -c <code>`; the image "local/python" maps to it.
WRITE = "import os,pathlib; pathlib.Path(os.environ['WS'],'data.txt').write_text(os.environ['KEY'])"
READ = (
    "import os,pathlib,sys; d=pathlib.Path(os.environ['WS'],'data.txt').read_text();"
    "pathlib.Path(os.environ['TERM_PATH']).write_text('{\"got\": \"'+d+'\"}'); sys.exit(int(os.environ.get('CODE','0')))"
)


def python_image(image: str, command: list[str]) -> list[str] | None:
    return [sys.executable, *command] if image == "local/python" else None


def container(name: str, code: str, image: str = "local/python", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": ["-c", code],
        "env": [
            {"name": "WS", "value": "/workspace"},
            {"name": "TERM_PATH", "value": "/dev/termination-log"},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}},
            {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            *extra.pop("env", []),
        ],
        "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        **extra,
    }


def job(name: str, init: list[dict[str, Any]], main: dict[str, Any]) -> dict[str, Any]:
    labels = {LABEL_MODEL_RUN: name}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "initContainers": init,
                    "containers": [main],
                    "volumes": [{"name": "workspace", "emptyDir": {}}],
                },
            },
        },
    }


@pytest.fixture
async def runner(kube: KubeClient, namespace: str, tmp_path: Path):
    await kube.create(
        SECRETS, {"metadata": {"name": "creds"}, "stringData": {"k": "s3cr3t-value"}}, namespace
    )
    r = LocalPodRunner(kube, namespace, tmp_path, image_map=python_image)
    task = asyncio.create_task(r.run_forever())
    yield r
    task.cancel()
    await r.close()


def job_done(j: dict[str, Any]) -> bool:
    return any(
        c["type"] in ("Complete", "Failed") and c["status"] == "True"
        for c in (j.get("status") or {}).get("conditions") or []
    )


async def test_stages_share_workspace_and_report_like_a_kubelet(kube, namespace, runner) -> None:
    await kube.create(
        JOBS, job("ok", [container("export", WRITE)], container("train", READ)), namespace
    )
    done = await kube.wait_for(JOBS, "ok", namespace, job_done, timeout=60)
    assert done["status"].get("succeeded") == 1
    [pod] = (await kube.list(PODS, namespace, label_selector=f"{LABEL_MODEL_RUN}=ok"))["items"]
    status = pod["status"]
    assert status["phase"] == "Succeeded" and pod["spec"]["nodeName"] == "local-node"
    init = status["initContainerStatuses"][0]["state"]["terminated"]
    assert (init["exitCode"], init["reason"]) == (0, "Completed")
    main = status["containerStatuses"][0]["state"]["terminated"]
    # The secret reached the first stage and crossed the shared workspace to the second.
    assert main["message"] == '{"got": "s3cr3t-value"}'


async def test_failed_stage_fails_the_pod_with_exit_code_and_log_tail(
    kube, namespace, runner
) -> None:
    crash = (
        "import sys; print('Traceback: ValueError: bad row ck123', file=sys.stderr); sys.exit(65)"
    )
    await kube.create(
        JOBS, job("bad", [container("export", crash)], container("train", READ)), namespace
    )
    await kube.wait_for(JOBS, "bad", namespace, job_done, timeout=60)
    [pod] = (await kube.list(PODS, namespace, label_selector=f"{LABEL_MODEL_RUN}=bad"))["items"]
    assert pod["status"]["phase"] == "Failed"
    term = pod["status"]["initContainerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 65 and "bad row ck123" in term["message"]
    assert "waiting" in pod["status"]["containerStatuses"][0]["state"]  # train never ran


async def test_unmappable_image_is_refused_with_a_clear_status(kube, namespace, runner) -> None:
    await kube.create(
        JOBS,
        job("img", [container("export", WRITE, image="busybox:1.36")], container("train", READ)),
        namespace,
    )
    for _ in range(100):
        pods = (await kube.list(PODS, namespace, label_selector=f"{LABEL_MODEL_RUN}=img"))["items"]
        statuses = (pods[0].get("status") or {}).get("initContainerStatuses") if pods else None
        if (
            statuses
            and statuses[0]["state"].get("waiting", {}).get("reason") == "ErrImageNeverPull"
        ):
            assert "busybox:1.36" in statuses[0]["state"]["waiting"]["message"]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the pod was not refused")


async def test_missing_secret_is_a_container_config_error(kube, namespace, runner) -> None:
    env = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]
    await kube.create(
        JOBS, job("cfg", [container("export", WRITE, env=env)], container("train", READ)), namespace
    )
    for _ in range(100):
        pods = (await kube.list(PODS, namespace, label_selector=f"{LABEL_MODEL_RUN}=cfg"))["items"]
        statuses = (pods[0].get("status") or {}).get("initContainerStatuses") if pods else None
        waiting = statuses[0]["state"].get("waiting", {}) if statuses else {}
        if waiting.get("reason") == "CreateContainerConfigError":
            assert "absent" in waiting["message"]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("missing secret not reported")


async def test_deleting_the_pod_stops_its_process(kube, namespace, runner, tmp_path) -> None:
    marker = tmp_path / "still-running"
    sleeper = f"import time,pathlib; p=pathlib.Path({str(marker)!r}); [p.write_text(str(i)) or time.sleep(0.1) for i in range(600)]"
    await kube.create(JOBS, job("del", [], container("train", sleeper)), namespace)
    for _ in range(200):
        if marker.exists():
            break
        await asyncio.sleep(0.1)
    [pod] = (await kube.list(PODS, namespace, label_selector=f"{LABEL_MODEL_RUN}=del"))["items"]
    await kube.delete(PODS, pod["metadata"]["name"], namespace)
    for _ in range(100):
        try:
            await kube.get(PODS, pod["metadata"]["name"], namespace)
        except NotFound:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("pod was not removed after its process stopped")
    last = marker.read_text()
    await asyncio.sleep(0.5)
    assert marker.read_text() == last  # the process is gone


def test_trainer_image_maps_to_this_checkout() -> None:
    cmd = map_trainer_image("127.0.0.1:1/lbtrain-trainer:0.1.0", ["lbtrain", "trainer", "export"])
    assert cmd == [sys.executable, "-m", "lbtrain", "trainer", "export"]
    assert map_trainer_image("127.0.0.1:1/nvidia/pytorch:24.01", ["python"]) is None
