"""Operator endpoints: GET /readyz, GET /metrics, and the drain answer.

None of them asks for a token (each overrides ``prepare``, like
HealthHandler): load balancers and Prometheus call them without one. Keep
/metrics off the public internet at the proxy (docs/deployment.md).
"""

from __future__ import annotations

import tornado.web

from ..errors import Unavailable
from .base import BaseHandler


class ReadyHandler(BaseHandler):
    """Ready when the database, the locks and the storage all answer."""

    async def prepare(self) -> None:
        pass  # load balancers probe without a token

    async def get(self) -> None:
        checks = await self.ctx.health.checks()
        backends = self.ctx.health.backends  # which backend each check is about
        failed = [name for name, result in checks.items() if result != "ok"]
        if not failed:
            self.send_json({"ready": True, "checks": checks, "backends": backends})
            return
        # Not counted in uploader_errors_total: probes every few seconds would
        # drown the API's errors; uploader_ready_check tells this story.
        error = Unavailable("not ready: " + ", ".join(failed))
        self.set_header("Retry-After", str(error.retry_after))
        self.send_json({"ready": False, "checks": checks, "backends": backends,
                        "error": {**error.to_json()["error"], "failed": failed}}, 503)


class MetricsHandler(BaseHandler):
    """The Prometheus text format; the uploads-by-status gauge is read from
    the database now, so every instance reports the shared truth."""

    async def prepare(self) -> None:
        pass  # scrapers carry no token; restrict /metrics at the proxy

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    async def get(self) -> None:
        metrics = self.ctx.metrics
        metrics.set_uploads(await self.ctx.health.upload_counts())
        await self.ctx.health.outbox()
        self.set_header("Content-Type", metrics.content_type)
        self.finish(metrics.render())


@tornado.web.stream_request_body
class DrainingHandler(BaseHandler):
    """Every request that arrives while the server drains: 503, Retry-After,
    connection closed. Streaming (explicitly, whatever BaseHandler does), so a
    chunk PUT is refused from its headers instead of having its body buffered
    (or refused as too large) first."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # Tornado closes it anyway once keep-alive is off (shutdown.py); this
        # also tells the client when the app is drained without a server.
        self.set_header("Connection", "close")

    async def prepare(self) -> None:
        raise Unavailable("server is shutting down", retry_after=2)

    def data_received(self, chunk: bytes) -> None:
        pass  # a body still arriving after the answer is dropped with the connection
