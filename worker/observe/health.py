"""/healthz, /readyz and /metrics over a small aiohttp server.

- ``/healthz``: the process and its event loop answer.
- ``/readyz``: every queue has a running poller and a successful receive within
  ``health.ready_window`` seconds, and the worker is not shutting down (so an orchestrator
  takes a stalled or stopping worker out of rotation and restarts a stalled one).
- ``/metrics``: Prometheus text format.
"""

from __future__ import annotations

import json
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.observe.metrics import Metrics
from worker.settings import HealthSettings


class Probe(Protocol):
    """What the health server asks of the worker (the supervisor implements it)."""

    metrics: Metrics

    def readiness(self, window: float) -> tuple[bool, dict[str, object]]: ...

    def update_gauges(self) -> None: ...


class HealthServer:
    def __init__(self, supervisor: Probe, settings: HealthSettings) -> None:
        self.supervisor = supervisor
        self.settings = settings
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        address = self._runner.addresses[0]
        self.port = int(address[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, detail = self.supervisor.readiness(self.settings.ready_window)
        return web.Response(
            status=200 if ready else 503, text=json.dumps(detail) + "\n", content_type="application/json"
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        self.supervisor.update_gauges()
        body = generate_latest(self.supervisor.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
