"""Running the webhook: the app on its port (optionally TLS, its certificate reloaded when the
files change; see `tls.py`), metrics on another, and a graceful stop that finishes in-flight
requests (up to `shutdown_timeout`) before closing."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field

from aiohttp import web

from lbtrain.logs import get_logger
from lbtrain_webhook.app import CACHE, INFLIGHT, METRICS, NAMESPACE, SECRETS, make_app, tls
from lbtrain_webhook.metrics import make_metrics_app
from lbtrain_webhook.settings import Settings

log = get_logger("lbtrain.webhook.server")


@dataclass
class Server:
    """The webhook and its metrics listener; `start()`, then `stop()` (graceful)."""

    settings: Settings
    app: web.Application | None = None
    _runners: list[web.AppRunner] = field(default_factory=list)
    _ports: list[int] = field(default_factory=list)

    async def start(self) -> None:
        s = self.settings
        self.app = app = make_app(s)
        runner = web.AppRunner(app, shutdown_timeout=s.shutdown_timeout, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        reloading = tls(app)
        ssl_context = reloading.context if reloading is not None else None
        await web.TCPSite(runner, s.host, s.port, ssl_context=ssl_context).start()
        self._ports.append(int(runner.addresses[0][1]))
        if s.metrics_port:
            metrics_runner = web.AppRunner(make_metrics_app(app[METRICS]), access_log=None)
            await metrics_runner.setup()
            self._runners.append(metrics_runner)
            await web.TCPSite(metrics_runner, s.host, s.metrics_port).start()
            self._ports.append(int(metrics_runner.addresses[0][1]))
        log.info(
            "webhook listening",
            extra={
                "addresses": [str(a) for a in runner.addresses],
                "tls": s.tls_cert is not None,
                "metrics_port": s.metrics_port or None,
                "namespace": app[NAMESPACE],
                "secrets": app[SECRETS].describe(),
                "event_loop": type(asyncio.get_running_loop()).__module__,
            },
        )

    @property
    def port(self) -> int:
        """The bound port of the webhook (useful with port 0)."""
        return self._ports[0]

    @property
    def metrics_port(self) -> int | None:
        return self._ports[1] if len(self._ports) > 1 else None

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish (up to `shutdown_timeout`), then close.

        The listeners close first, and only then does aiohttp's own cleanup run: aiohttp stops
        reading from every connection as soon as its cleanup starts, so a request whose body is
        still arriving could never finish if we left the waiting to it."""
        log.info("shutting down; finishing in-flight requests")
        for runner in self._runners:
            for site in list(runner.sites):
                await site.stop()
        if self.app is not None:
            inflight = self.app[INFLIGHT]
            if not await inflight.wait_idle(self.settings.shutdown_timeout):
                log.warning(
                    "shutdown timeout: cancelling requests still in flight",
                    extra={"in_flight": inflight.count},
                )
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def wait_ready(self, timeout: float) -> None:
        assert self.app is not None
        await self.app[CACHE].wait_synced(timeout)


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or `stop` is set), then stop gracefully."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = Server(settings)
    try:
        await server.start()
        await stop.wait()
    finally:
        await server.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
