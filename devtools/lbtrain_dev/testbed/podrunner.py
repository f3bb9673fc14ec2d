"""A local pod runner: the testbed's stand-in for a kubelet, for development and end-to-end tests.

It watches the pods of lbtrain Jobs in one namespace and runs their containers as local
processes, in the order a kubelet would (init containers one by one, then the main container),
and writes back exactly the status a kubelet writes: `initContainerStatuses`,
`containerStatuses`, exit codes, reasons, termination messages, the pod phase. Images are not
run: an image the runner can map (by default, the trainer image) becomes this checkout's
`lbtrain` command; any other image is refused with a clear waiting reason, as a kubelet that
cannot pull it would. `emptyDir` (and, for development, PVC) volumes become folders, a projected
`serviceAccountToken` volume a folder holding a token the API server binds to the pod (as the
kubelet asks for it: TokenRequest, the pod as bound object, the volume's audience), and every
environment value under a mount path is rewritten to the folder, so the trainer's workspace and
termination-message paths land on this machine. Deleting the pod stops its processes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbtrain.kube import (
    PODS,
    SECRETS,
    SERVICEACCOUNTS,
    ApiError,
    ApiUnreachable,
    KubeClient,
    NotFound,
    Resource,
)
from lbtrain.resources.names import LABEL_MODEL_RUN
from lbtrain_dev.testbed import fake_kubelet as fk

log = logging.getLogger("lbtrain.podrunner")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
LOG_TAIL_BYTES = 2048
DEFAULT_TERMINATION_PATH = "/dev/termination-log"


def map_trainer_image(image: str, command: list[str]) -> list[str] | None:
    """The local command for a container of the trainer image, or None if it cannot run here."""
    name = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    if (
        name not in ("trainer", "lbtrain-trainer", "lbtrain")
        or not command
        or command[0] != "lbtrain"
    ):
        return None
    return [sys.executable, "-m", "lbtrain", *command[1:]]


class ContainerConfigError(Exception):
    """A container cannot start (a missing Secret key...); becomes CreateContainerConfigError."""


@dataclass
class PodRun:
    """The processes and folders of one pod."""

    name: str
    root: Path
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    deleted: bool = False


class LocalPodRunner:
    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        work_root: Path,
        *,
        node_name: str = "local-node",
        image_map: Callable[[str, list[str]], list[str] | None] = map_trainer_image,
        extra_env: dict[str, str] | None = None,
        max_parallel: int = 4,
    ) -> None:
        self.kube, self.namespace, self.work_root = kube, namespace, work_root
        self.node_name, self.image_map = node_name, image_map
        self.extra_env = extra_env or {}
        self.runs: dict[str, PodRun] = {}
        # Pods beyond this wait unscheduled, like pods on a full node.
        self._slots = asyncio.Semaphore(max_parallel)

    # --- watching ------------------------------------------------------------------------------
    async def run_forever(self) -> None:
        selector = LABEL_MODEL_RUN
        while True:
            try:
                listing = await self.kube.list(PODS, self.namespace, label_selector=selector)
                for pod in listing.get("items", []):
                    self._consider(pod)
                rv = listing["metadata"].get("resourceVersion")
                async for event in self.kube.watch(
                    PODS,
                    self.namespace,
                    resource_version=rv,
                    label_selector=selector,
                    timeout_seconds=60,
                ):
                    if event.type == "DELETED":
                        self._stop(event.object["metadata"]["name"])
                    elif event.type in ("ADDED", "MODIFIED"):
                        self._consider(event.object)
            except (ApiError, ApiUnreachable) as exc:
                log.warning("pod watch interrupted: %s", exc)
                await asyncio.sleep(1)

    def _consider(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        if pod["metadata"].get("deletionTimestamp"):
            self._stop(name)
            return
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if name in self.runs or phase != "Pending" or pod["spec"].get("nodeName"):
            return
        run = PodRun(name, self.work_root / self.namespace / name)
        self.runs[name] = run
        run.task = asyncio.create_task(self._run_pod(pod, run), name=f"pod-{name}")

    def _stop(self, name: str) -> None:
        run = self.runs.get(name)
        if run is None or run.deleted:
            return
        run.deleted = True
        for proc in run.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)

    async def close(self) -> None:
        for name in list(self.runs):
            self._stop(name)
        tasks = [r.task for r in self.runs.values() if r.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- one pod -------------------------------------------------------------------------------
    async def _patch(self, name: str, status: dict[str, Any]) -> None:
        with contextlib.suppress(NotFound):
            await self.kube.patch(
                PODS, name, {"status": status}, self.namespace, subresource="status"
            )

    async def _run_pod(self, pod: dict[str, Any], run: PodRun) -> None:
        name = pod["metadata"]["name"]
        try:
            async with self._slots:
                if run.deleted:
                    return
                await fk.FakeKubelet(self.kube, self.namespace, self.node_name).schedule(pod)
                pod = await self.kube.get(PODS, name, self.namespace)
                await self._run_containers(pod, run)
        except NotFound:
            pass
        except Exception:
            log.exception("local pod runner failed on pod %s", name)
        finally:
            if run.deleted:
                # A kubelet confirms a deletion once the containers stopped.
                with contextlib.suppress(NotFound):
                    await self.kube.delete(PODS, name, self.namespace, grace_period_seconds=0)
            shutil.rmtree(run.root, ignore_errors=True)

    async def _run_containers(self, pod: dict[str, Any], run: PodRun) -> None:
        spec, name = pod["spec"], pod["metadata"]["name"]
        inits, mains = spec.get("initContainers") or [], spec.get("containers") or []
        mounts = self._volumes(spec, run.root)
        await self._project_tokens(pod, mounts)
        statuses: dict[str, dict[str, Any]] = {
            c["name"]: fk.waiting(c["name"], c.get("image", "")) for c in inits + mains
        }
        started = fk.now()

        async def report(phase: str) -> None:
            await self._patch(
                name,
                {
                    "phase": phase,
                    "startTime": started,
                    "hostIP": "127.0.0.1",
                    "podIP": "127.0.0.1",
                    "initContainerStatuses": [statuses[c["name"]] for c in inits],
                    "containerStatuses": [statuses[c["name"]] for c in mains],
                },
            )

        for container in inits + mains:
            cname, image = container["name"], container.get("image", "")
            is_main = container in mains
            command = self.image_map(
                image, list(container.get("command") or []) + list(container.get("args") or [])
            )
            if command is None:
                statuses[cname] = fk.waiting(
                    cname,
                    image,
                    "ErrImageNeverPull",
                    f"the local pod runner cannot run image {image!r}: "
                    "it runs only the lbtrain trainer image",
                )
                await report("Pending")
                return
            try:
                env, term_file = await self._environment(pod, container, mounts, run.root)
            except ContainerConfigError as exc:
                statuses[cname] = fk.waiting(cname, image, "CreateContainerConfigError", str(exc))
                await report("Pending")
                return
            statuses[cname] = fk.running(cname, image)
            await report("Running" if is_main else "Pending")
            code, message = await self._execute(run, cname, command, env, term_file, container)
            if run.deleted:
                code, message = 137, message or "the pod was deleted"
            reason = "Completed" if code == 0 else ("OOMKilled" if code == -9 else "Error")
            statuses[cname] = fk.terminated(
                cname,
                image,
                code if code >= 0 else 128 - code,
                reason,
                message,
                started_at=statuses[cname]["state"]["running"]["startedAt"],
            )
            if code != 0 or run.deleted:
                await report("Failed")
                return
        await report("Succeeded")

    async def _project_tokens(self, pod: dict[str, Any], folders: dict[str, Path]) -> None:
        """Write the service-account tokens of the pod's projected volumes, bound to the pod."""
        account = pod["spec"].get("serviceAccountName") or "default"
        path = SERVICEACCOUNTS.path(self.namespace, account) + "/token"
        for volume in pod["spec"].get("volumes") or []:
            for source in (volume.get("projected") or {}).get("sources") or []:
                token = source.get("serviceAccountToken")
                if token is None:
                    continue
                spec: dict[str, Any] = {
                    "expirationSeconds": token.get("expirationSeconds", 3600),
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": pod["metadata"]["name"],
                        "uid": pod["metadata"]["uid"],
                    },
                }
                if token.get("audience"):
                    spec["audiences"] = [token["audience"]]
                answer = await self.kube.request("POST", path, body={"spec": spec})
                (folders[volume["name"]] / token["path"]).write_text(answer["status"]["token"])

    def _volumes(self, spec: dict[str, Any], root: Path) -> dict[str, Path]:
        """Local folders for the pod's volumes, by volume name."""
        folders: dict[str, Path] = {}
        for volume in spec.get("volumes") or []:
            if "emptyDir" in volume or "projected" in volume:
                folders[volume["name"]] = root / "volumes" / volume["name"]
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                folders[volume["name"]] = self.work_root / "pvc" / claim
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        return folders

    async def _environment(
        self, pod: dict[str, Any], container: dict[str, Any], volumes: dict[str, Path], root: Path
    ) -> tuple[dict[str, str], Path]:
        mounts = {
            m["mountPath"]: volumes[m["name"]]
            for m in container.get("volumeMounts") or []
            if m["name"] in volumes
        }
        term_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH
        term_file = root / "termination" / container["name"]
        term_file.parent.mkdir(parents=True, exist_ok=True)
        term_file.write_text("")

        def local(value: str) -> str:
            if value == term_path:
                return str(term_file)
            for mount, folder in sorted(mounts.items(), key=lambda m: -len(m[0])):
                if value == mount or value.startswith(mount.rstrip("/") + "/"):
                    return str(folder) + value[len(mount.rstrip("/")) :]
            return value

        env = {
            k: v
            for k, v in os.environ.items()
            if k
            in (
                "PATH",
                "HOME",
                "LANG",
                "NO_PROXY",
                "no_proxy",
                "PYTHONPATH",
                "VIRTUAL_ENV",
                "TMPDIR",
            )
        }
        env.update(self.extra_env)
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = local(str(item["value"]))
            elif "valueFrom" in item:
                env[item["name"]] = await self._value_from(pod, item["name"], item["valueFrom"])
        env["TMPDIR"] = str(volumes.get("tmp", root / "tmp"))
        Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        return env, term_file

    async def _value_from(self, pod: dict[str, Any], name: str, source: dict[str, Any]) -> str:
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            fields = {
                "metadata.name": pod["metadata"]["name"],
                "metadata.namespace": self.namespace,
                "spec.nodeName": self.node_name,
                "status.podIP": "127.0.0.1",
                "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
            }
            if path not in fields:
                raise ContainerConfigError(f"env {name}: fieldRef {path} is not supported here")
            return str(fields[path])
        for key, res in (("secretKeyRef", SECRETS), ("configMapKeyRef", CONFIGMAPS)):
            if key in source:
                ref = source[key]
                try:
                    obj = await self.kube.get(res, ref["name"], self.namespace)
                except NotFound as exc:
                    raise ContainerConfigError(
                        f"{res.kind.lower()} {ref['name']!r} not found"
                    ) from exc
                data = obj.get("data") or {}
                if ref["key"] not in data:
                    raise ContainerConfigError(
                        f"couldn't find key {ref['key']} in {res.kind} {ref['name']}"
                    )
                value = str(data[ref["key"]])
                return base64.b64decode(value).decode() if res is SECRETS else value
        raise ContainerConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")

    async def _execute(
        self,
        run: PodRun,
        cname: str,
        command: list[str],
        env: dict[str, str],
        term_file: Path,
        container: dict[str, Any],
    ) -> tuple[int, str]:
        log_path = run.root / "logs" / f"{cname}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *command,
                env=env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                cwd=str(run.root),
            )
            run.procs[cname] = proc
            code = await proc.wait()
        message = term_file.read_text(errors="replace")[:4096] if term_file.exists() else ""
        fallback = container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        if not message and code != 0 and fallback:
            data = log_path.read_bytes()
            message = data[-LOG_TAIL_BYTES:].decode(errors="replace")
        self._keep_log(run, cname, log_path)
        return code, message

    def _keep_log(self, run: PodRun, cname: str, log_path: Path) -> None:
        """Copy container logs out of the pod folder (removed with the pod) for people to read."""
        keep = self.work_root / "logs" / self.namespace / run.name
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_path, keep / f"{cname}.log")
