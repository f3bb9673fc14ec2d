"""The benches' own use of the API server: namespaces, list+watch followers, request counts.

Each bench measures in fresh namespaces and deletes them before the next phase, so one phase's
objects (and the controllers still working on them) do not slow the next one down.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from lbtrain.kube import (
    MODELRUNS,
    NAMESPACES,
    PODS,
    SERVICEACCOUNTS,
    ApiError,
    ApiUnreachable,
    KubeClient,
    NotFound,
    Resource,
)

from .aio import bounded


class Follower:
    """List, then watch, one resource in one namespace; `seen(obj)` for every version of every
    object, stamped on arrival by the caller. Relists after a 410, rides out an unreachable
    API server."""

    def __init__(
        self, kube: KubeClient, res: Resource, ns: str, seen: Callable[[dict[str, Any]], None]
    ) -> None:
        self.kube, self.res, self.ns, self.seen = kube, res, ns, seen

    async def run(self) -> None:
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    listing = await self.kube.list(self.res, self.ns)
                    for item in listing.get("items", []):
                        self.seen(item)
                    rv = str(listing["metadata"]["resourceVersion"])
                async for event in self.kube.watch(
                    self.res, self.ns, resource_version=rv, timeout_seconds=240
                ):
                    rv = str(event.object.get("metadata", {}).get("resourceVersion") or rv)
                    if event.type in ("ADDED", "MODIFIED"):
                        self.seen(event.object)
            except ApiError as exc:
                if exc.status != 410:
                    raise
                rv = None
            except ApiUnreachable:
                await asyncio.sleep(0.5)


async def create_namespace(kube: KubeClient, name: str) -> None:
    """A namespace labelled as the bench's, once its default ServiceAccount exists."""
    await kube.create(NAMESPACES, {"metadata": {"name": name, "labels": {"lbtrain.io/bench": "1"}}})
    await kube.wait_for(SERVICEACCOUNTS, "default", name, lambda _: True, timeout=60)


async def delete_namespace(kube: KubeClient, name: str, timeout: float = 600) -> float:
    """Delete a namespace and wait until it is gone; answers the seconds it took. The
    finalizers on its pods (the Job controller's tracking finalizer, removed at the controller
    manager's 20 QPS) and ModelRuns (the operator's, which is stopped by then) are stripped
    here so it goes quickly."""
    started = time.monotonic()
    with contextlib.suppress(NotFound):
        await kube.delete(NAMESPACES, name)

    async def strip(res: Resource) -> None:
        with contextlib.suppress(ApiError, ApiUnreachable):
            items = (await kube.list(res, name))["items"]
            stuck = [i["metadata"]["name"] for i in items if i["metadata"].get("finalizers")]

            async def one(i: int) -> None:
                with contextlib.suppress(ApiError, ApiUnreachable):
                    await kube.patch(res, stuck[i], {"metadata": {"finalizers": None}}, name)

            await bounded(32, len(stuck), one)

    while time.monotonic() - started < timeout:
        try:
            await kube.get(NAMESPACES, name)
        except NotFound:
            return time.monotonic() - started
        for res in (PODS, MODELRUNS):
            await strip(res)
        await asyncio.sleep(1.0)
    print(f"  warning: namespace {name} still there after {timeout:.0f}s", flush=True)
    return time.monotonic() - started


_REQUEST_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)


def parse_request_counts(metrics: str) -> dict[str, float]:
    """kube-apiserver's `apiserver_request_total` summed by "VERB resource[/subresource]"."""
    counts: dict[str, float] = {}
    for m in _REQUEST_LINE.finditer(metrics):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        key = f"{labels.get('verb')} {labels.get('resource')}"
        if labels.get("subresource"):
            key += f"/{labels['subresource']}"
        counts[key] = counts.get(key, 0.0) + float(m.group("value"))
    return counts


async def request_counts(kube: KubeClient) -> dict[str, float]:
    """kube-apiserver's own request counters now (see `parse_request_counts`)."""
    config = kube.config
    headers = {"Authorization": f"Bearer {config.bearer_token()}"}
    connector = aiohttp.TCPConnector(ssl=config.ssl_context())
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(config.server + "/metrics", headers=headers) as resp,
    ):
        return parse_request_counts(await resp.text())


def per_run(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """Request counts per run between two snapshots, leaving out the rare ones."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    return {k: v / n for k, v in delta.items() if v >= n / 10}
