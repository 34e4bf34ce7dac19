"""Operator endpoints: GET /readyz, GET /metrics, and the drain answer.

None of them asks for a token (each overrides ``prepare``, like
HealthHandler): load balancers and Prometheus call them without one. Keep
/metrics off the public internet at the proxy (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import tornado.web

from ..errors import Unavailable, UploadError
from ..models import utcnow
from .base import BaseHandler

log = logging.getLogger("uploader.health")
# Each readiness check, and the scrape-time database count, gets this long:
# a load balancer's probe usually times out after a few seconds.
CHECK_TIMEOUT = 3.0


async def _check(probe: Callable[[], Awaitable[Any]]) -> str:
    """"ok", or a short reason (no hosts, paths or credentials: the answer is public)."""
    try:
        result = await asyncio.wait_for(probe(), CHECK_TIMEOUT)
    except asyncio.TimeoutError:
        return "timeout"
    except UploadError as exc:
        return exc.code  # "unavailable", "insufficient_storage"
    except Exception:
        log.exception("readiness check failed unexpectedly")
        return "error"
    return "unavailable" if result is False else "ok"


class ReadyHandler(BaseHandler):
    """Ready when the database, the locks and the storage all answer."""

    async def prepare(self) -> None:
        pass  # load balancers probe without a token

    async def get(self) -> None:
        runtime = self.runtime
        names = ("database", "locks", "storage")
        results = await asyncio.gather(_check(runtime.store.ping), _check(runtime.locks.ping),
                                       _check(runtime.storage.ping))
        checks = dict(zip(names, results))
        failed = [name for name, result in checks.items() if result != "ok"]
        for name, result in checks.items():
            if runtime.metrics.set_ready(name, result == "ok"):
                # Log changes only: probes come every few seconds.
                log.log(logging.INFO if result == "ok" else logging.WARNING,
                        "readiness: %s is %s", name, result)
        if not failed:
            self.send_json({"ready": True, "checks": checks})
            return
        # Not counted in uploader_errors_total: probes every few seconds would
        # drown the API's errors; uploader_ready_check tells this story.
        error = Unavailable("not ready: " + ", ".join(failed))
        self.set_header("Retry-After", str(error.retry_after))
        self.send_json({"ready": False, "checks": checks,
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
        metrics = self.runtime.metrics
        try:
            counts = await asyncio.wait_for(self.runtime.store.count_by_status(), CHECK_TIMEOUT)
        except (asyncio.TimeoutError, UploadError):
            # Metrics matter most during an outage: answer without the gauge.
            counts = None
        metrics.set_uploads(counts)
        try:
            stats = await asyncio.wait_for(self.runtime.store.outbox_stats(), CHECK_TIMEOUT)
        except (asyncio.TimeoutError, UploadError):
            stats = None
        metrics.set_outbox(stats, utcnow())
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
