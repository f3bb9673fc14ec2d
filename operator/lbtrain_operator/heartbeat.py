"""Liveness that means something: proof that watches still deliver events.

A process can be alive while its watch streams are silently dead (a half-open connection, a
stuck API server). So the operator renews a Lease every few seconds and watches it like any
other object; the liveness probe fails when the last renewal it *saw through the watch* is too
old. Kubernetes then restarts the operator, and the restart re-lists everything.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from lbtrain.kube import LEASES, KubeClient, NotFound

HEARTBEAT_LEASE = "lbtrain-operator-heartbeat"
log = logging.getLogger("lbtrain.operator")


class Heartbeat:
    def __init__(self, kube: KubeClient, namespace: str, interval_s: float = 10.0) -> None:
        self.kube = kube
        self.namespace = namespace
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.last_seen: float | None = None

    def seen(self) -> None:
        self.last_seen = time.monotonic()

    def check(self) -> str:
        """Raise when the watch has not delivered a renewal for three intervals."""
        now = time.monotonic()
        reference = self.last_seen if self.last_seen is not None else self.started
        stale = now - reference
        if stale > 3 * self.interval_s:
            raise RuntimeError(f"watches stalled: no heartbeat event for {stale:.0f}s")
        return f"heartbeat seen {stale:.0f}s ago"

    async def renew_forever(self) -> None:
        while True:
            try:
                await self.renew()
            except Exception as exc:  # keep beating; the probe reports the consequence
                log.warning("heartbeat renewal failed", extra={"error": str(exc)})
            await asyncio.sleep(self.interval_s)

    async def renew(self) -> None:
        spec = {
            "holderIdentity": "lbtrain-operator",
            "renewTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        try:
            await self.kube.patch(LEASES, HEARTBEAT_LEASE, {"spec": spec}, self.namespace)
        except NotFound:
            await self.kube.create(
                LEASES, {"metadata": {"name": HEARTBEAT_LEASE}, "spec": spec}, self.namespace
            )
