"""`lbtrain operator`: run the operator: ModelRuns become GPU Jobs mirrored to Labelbox.

Flags and environment in, a running kopf operator out.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kopf
from prometheus_client import start_http_server

from lbtrain.kube import JOBS, PODS, KubeClient, load_config
from lbtrain.kube.config import ConfigError
from lbtrain.resources.names import ANNOTATION_PREFIX, FINALIZER
from lbtrain_operator import flags, heap, logs, progress_server
from lbtrain_operator.context import Context
from lbtrain_operator.diffbase import NoDiffBase
from lbtrain_operator.handlers import register
from lbtrain_operator.heartbeat import Heartbeat
from lbtrain_operator.informer import Informer, RunKey, RunObjects
from lbtrain_operator.labelbox import LabelboxReporter
from lbtrain_operator.metrics import Metrics
from lbtrain_operator.progress_server import ProgressEndpoint
from lbtrain_operator.settings import Settings

log = logging.getLogger("lbtrain.operator")
# The progress endpoint listens on every interface: trainer pods reach it through its Service.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbtrain operator",
        description="Run the lbtrain operator: every ModelRun becomes a GPU Job built from the "
        "TrainingTemplate of its model type; the Job's stages are mirrored to the Labelbox model "
        "run (EXPORTING_DATA, PREPARING_DATA, TRAINING_MODEL, COMPLETE or FAILED).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    groups = {
        name: p.add_argument_group(name)
        for name in (flags.KUBERNETES, flags.LABELBOX, flags.OPERATIONS, flags.PROGRESS)
    }
    k = groups[flags.KUBERNETES]
    flags.KUBECONFIG.add_to(k)
    # The two flags that are not of the table's shape: one of them at most, and a list.
    scope = k.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; env LBTRAIN_NAMESPACES, comma-separated)",
    )
    scope.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="watch every namespace (needs cluster-wide RBAC)",
    )
    flags.add_all(groups)
    return p


def _api_key(args: argparse.Namespace) -> str | None:
    if args.labelbox_api_key_file:
        return str(Path(args.labelbox_api_key_file).read_text().strip())
    return os.environ.get("LABELBOX_API_KEY")


def build(args: argparse.Namespace) -> tuple[kopf.OperatorRegistry, kopf.Memo, list[str], bool]:
    config = load_config(args.kubeconfig)
    namespaces = list(args.namespace) or [
        n for n in (_env("LBTRAIN_NAMESPACES") or "").split(",") if n
    ]
    if not namespaces and not args.all_namespaces:
        namespaces = [config.namespace]
    settings = Settings(
        labelbox_endpoint=args.labelbox_endpoint,
        labelbox_rest_endpoint=args.labelbox_rest_endpoint,
        api_key_secret_name=args.api_key_secret,
        report_backoff_max_s=args.report_backoff_max,
        report_wait_s=args.report_wait,
        cancel_report_timeout_s=args.cancel_report_timeout,
        resync_interval_s=args.resync_interval,
        max_concurrent_passes=args.max_concurrent_passes,
        burst_quiet_s=args.burst_quiet,
        burst_max_hold_s=args.burst_max_hold,
        restricted_pods=not args.no_restricted_pods,
        default_queue=args.default_queue,
        progress_url=args.progress_url,
        progress_interval_s=args.progress_interval,
    )
    kube = KubeClient(config)
    reporter = LabelboxReporter(
        _api_key(args), settings.labelbox_endpoint, settings.labelbox_rest_endpoint
    )
    wakers: dict[RunKey, asyncio.Event] = {}

    def wake(key: RunKey) -> None:
        waker = wakers.get(key)
        if waker is not None:
            waker.set()

    objects = RunObjects(on_change=wake)

    def progressed(key: RunKey, progress: dict[str, Any]) -> None:
        ctx.live_progress[key] = progress
        wake(key)

    ctx = Context(
        kube=kube,
        reporter=reporter,
        settings=settings,
        metrics=Metrics(),
        objects=objects,
    )
    heartbeat = Heartbeat(
        kube, namespaces[0] if namespaces else config.namespace, args.heartbeat_interval
    )
    informers = [
        Informer(kube, resource, namespace, objects, watch_timeout_s=args.watch_timeout)
        for namespace in (namespaces or [None])
        for resource in (JOBS, PODS)
    ]
    memo = kopf.Memo(
        ctx=ctx,
        wakers=wakers,
        heartbeat=heartbeat,
        informers=informers,
        # A silent watch is re-opened every --watch-timeout seconds, plus the read timeout.
        informer_stale_after_s=args.watch_timeout + 60,
        progress_endpoint=ProgressEndpoint(kube, progressed, metrics=ctx.metrics)
        if args.progress_port
        else None,
        progress_port=args.progress_port,
    )
    registry = kopf.OperatorRegistry()
    register(registry)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=config.server,
            ca_data=config.ca_data,
            ca_path=config.ca_file,
            insecure=config.insecure,
            token=config.bearer_token(),
            certificate_data=config.client_cert_data,
            private_key_data=config.client_key_data,
            default_namespace=config.namespace,
        )

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=ANNOTATION_PREFIX
        )
        settings.persistence.diffbase_storage = NoDiffBase()
        settings.watching.server_timeout = args.watch_timeout
        settings.watching.client_timeout = args.watch_timeout + 30
        settings.watching.connect_timeout = 10
        settings.posting.level = logging.WARNING  # our own Events carry the transitions
        settings.networking.request_timeout = 60
        memo.heartbeat_task = asyncio.create_task(memo.heartbeat.renew_forever())
        memo.informer_tasks = [asyncio.create_task(i.run()) for i in memo.informers]
        memo.progress_runner = None
        if memo.progress_endpoint is not None:
            memo.progress_runner = await progress_server.start(
                memo.progress_endpoint, ALL_INTERFACES, memo.progress_port
            )

    @kopf.on.cleanup(registry=registry)
    async def close(memo: Any, **_: Any) -> None:
        memo.heartbeat_task.cancel()
        for task in memo.informer_tasks:
            task.cancel()
        if memo.progress_runner is not None:
            await memo.progress_runner.cleanup()
        await memo.ctx.kube.close()
        memo.ctx.reporter.close()

    return registry, memo, namespaces, bool(args.all_namespaces)


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    logs.configure(args.log_level, json_lines=args.log_format == "json")
    try:
        registry, memo, namespaces, clusterwide = build(args)
    except (ConfigError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    if args.metrics_port:
        start_http_server(args.metrics_port, registry=memo.ctx.metrics.registry)
    liveness = f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
    frozen = heap.freeze_start_up_heap()
    log.info(
        "starting",
        extra={
            "namespaces": namespaces or "all",
            "labelbox_endpoint": args.labelbox_endpoint,
            "frozen_objects": frozen,
        },
    )
    asyncio.run(
        kopf.operator(
            registry=registry,
            memo=memo,
            namespaces=namespaces,
            clusterwide=clusterwide,
            standalone=True,
            liveness_endpoint=liveness,
            # kopf's default identity asks the passwd database for the user's name, which a
            # container running as an arbitrary uid (the chart's 65532, OpenShift's random
            # ones) does not have: it crashed the operator pod at start on a real node.
            identity=operator_identity(),  # type: ignore[arg-type]  # kopf exports no Identity
        )
    )
    return 0


def operator_identity() -> str:
    """Who this operator is to kopf: the pod's name (the hostname) and the process, never the
    user name, which needs a passwd entry for the uid."""
    return f"lbtrain-operator@{socket.gethostname()}/{os.getpid()}"
