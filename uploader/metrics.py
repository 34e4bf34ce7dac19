"""Prometheus metrics of one server process (``GET /metrics``).

Every metric lives in the ``Metrics`` object's own ``CollectorRegistry``,
never in prometheus_client's global one: several apps run in one test
process, and a global registry would refuse the second app's metrics (or mix
their counts). ``app.build_runtime`` makes one and hands it to the parts that
count things.

Label values are bounded: routes are URL patterns (``/upload/{id}/chunk``),
never paths with ids; lock names are cut to their kind (``upload``).
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Any, AsyncContextManager, AsyncIterator, Awaitable, Mapping, TypeVar

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, PlatformCollector, ProcessCollector, generate_latest)

from .errors import UploadError
from .locks.base import LockHandle, LockTimeout, Locks

T = TypeVar("T")
STATUSES = ("in_progress", "merging", "completed", "failed", "aborted")
# Chunk PUTs and merges run from milliseconds (small chunk, local disk) to
# minutes (64 MiB over a slow link; a 50 GiB merge).
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_LOCK_SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, *, process: bool = True) -> None:
        r = self.registry = CollectorRegistry()
        if process:
            # CPU, memory, open fds, start time: what an operator checks first.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self.requests = Counter(
            "uploader_http_requests", "HTTP requests answered, by route pattern, method and "
            "status (499: the client went away before the answer)",
            ["route", "method", "status"], registry=r)
        self.request_duration = Histogram(
            "uploader_http_request_duration_seconds", "Time from request start to answer",
            ["route"], buckets=_SECONDS, registry=r)
        self.in_flight = Gauge("uploader_http_requests_in_flight",
                               "Requests being handled now", registry=r)
        self.errors = Counter("uploader_errors", "Error answers by code of the error table",
                              ["code"], registry=r)
        self.bytes_received = Counter(
            "uploader_chunk_bytes_received", "Chunk body bytes read from clients, kept or not",
            registry=r)
        self.chunks_written = Counter("uploader_chunks_written",
                                      "Chunks stored and recorded (answered 200)", registry=r)
        self.part_urls = Counter(
            "uploader_part_urls_signed", "Presigned part URLs handed out (direct mode: chunk "
            "bytes then go to the object store, not through this server)", registry=r)
        self.chunk_duration = Histogram(
            "uploader_chunk_duration_seconds", "Duration of successful chunk PUTs, first byte "
            "of the request to the recorded answer", buckets=_SECONDS, registry=r)
        self.merge_duration = Histogram(
            "uploader_merge_duration_seconds", "Duration of merge tasks (lock wait included) "
            "by outcome: completed or an error code", ["outcome"], buckets=_SECONDS, registry=r)
        self.lock_wait = Histogram(
            "uploader_lock_wait_seconds", "Time spent acquiring a lock, by lock kind and "
            "outcome (acquired, timeout, error)", ["lock", "outcome"],
            buckets=_LOCK_SECONDS, registry=r)
        self.sweeps = Counter("uploader_expiry_sweeps",
                              "Expiry sweeps by result (done, skipped: another instance "
                              "swept, failed)", ["result"], registry=r)
        self.swept = Counter("uploader_expiry_removed",
                             "What expiry sweeps removed (expired uploads, orphan folders, "
                             "stray part files) or failed to", ["kind"], registry=r)
        self.sweep_batches = Counter(
            "uploader_expiry_batches", "Batches of expired uploads a sweep claimed and removed "
            "(at most expiry.batch_size each)", registry=r)
        self.sweep_running = Gauge(
            "uploader_expiry_running", "1 while this instance runs an expiry sweep", registry=r)
        self.sweep_progress = Gauge(
            "uploader_expiry_sweep_removed", "Expired uploads removed so far by the running "
            "sweep of this instance (the last one's total once it ended)", registry=r)
        self.sweep_duration = Gauge(
            "uploader_expiry_last_duration_seconds", "Duration of this instance's last "
            "finished expiry sweep", registry=r)
        self.uploads = Gauge("uploader_uploads", "Uploads in the database by status, read "
                             "at scrape time (the same on every instance)", ["status"],
                             registry=r)
        self.ready = Gauge("uploader_ready_check", "Last readiness result per check "
                           "(1 ok, 0 failing)", ["check"], registry=r)
        self.events_written = Counter(
            "uploader_events_written", "Lifecycle events committed to the outbox by this "
            "instance, by type", ["type"], registry=r)
        self.events_delivered = Counter(
            "uploader_events_delivered", "Events delivered, by sink (stream, webhook:<name>)",
            ["sink"], registry=r)
        self.events_retried = Counter(
            "uploader_events_retried", "Failed delivery attempts that will be retried, by sink",
            ["sink"], registry=r)
        self.events_failed = Counter(
            "uploader_events_failed", "Deliveries given up after webhooks.retry_for, by sink",
            ["sink"], registry=r)
        self.outbox_lag = Gauge(
            "uploader_outbox_lag_seconds", "Age of the oldest event not yet dispatched "
            "(0 when none), read at scrape time", registry=r)
        self.queue_depth = Gauge(
            "uploader_queue_depth", "Work waiting, read at scrape time: outbox (events not "
            "yet dispatched), webhook:<name> (deliveries pending), merge (merge jobs)",
            ["queue"], registry=r)
        self.deliveries_failed = Gauge(
            "uploader_event_deliveries_failed", "Webhook deliveries kept as failed in the "
            "database (all instances), by sink, read at scrape time", ["sink"], registry=r)
        self._routes: dict[type, str] = {}
        self._queue_names: set[tuple[str]] = set()
        self._ready: dict[str, bool] = {}

    # -- requests ------------------------------------------------------------

    def set_routes(self, routes: Mapping[type, str]) -> None:
        """Handler class -> route label, from the app's route table."""
        self._routes = dict(routes)

    def route_of(self, handler: Any) -> str:
        return self._routes.get(type(handler), "other")

    def observe_request(self, route: str, method: str, status: int, seconds: float,
                        error_code: str | None, chunk_bytes: int | None,
                        chunk_written: bool) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.request_duration.labels(route).observe(seconds)
        if error_code:
            self.errors.labels(error_code).inc()
        if chunk_bytes:
            self.bytes_received.inc(chunk_bytes)
        if chunk_written:
            self.chunks_written.inc()
            self.chunk_duration.observe(seconds)

    # -- merges, sweeps, the uploads gauge -----------------------------------

    async def time_merge(self, work: Awaitable[T]) -> T:
        start = time.monotonic()
        outcome = "internal"
        try:
            result = await work
            outcome = "completed"
            return result
        except UploadError as exc:
            outcome = exc.code
            raise
        except BaseException as exc:
            if not isinstance(exc, Exception):
                outcome = "cancelled"  # shutdown
            raise
        finally:
            self.merge_duration.labels(outcome).observe(time.monotonic() - start)

    def sweep_started(self) -> None:
        self.sweep_running.set(1)
        self.sweep_progress.set(0)

    def observe_sweep_batch(self, removed: int) -> None:
        """Counted as each batch goes, so a long sweep shows its progress."""
        self.sweep_batches.inc()
        self.swept.labels("expired").inc(removed)
        self.sweep_progress.inc(removed)

    def sweep_finished(self, seconds: float) -> None:
        self.sweep_running.set(0)
        self.sweep_duration.set(seconds)

    def observe_sweep(self, report: Any) -> None:
        """``report`` is a cleanup.SweepReport (not imported: cleanup imports
        the service, which imports this module)."""
        if report.skipped:
            self.sweeps.labels("skipped").inc()
            return
        self.sweeps.labels("done").inc()
        self.swept.labels("orphans").inc(len(report.orphans))
        self.swept.labels("stray_parts").inc(report.stray_parts)
        self.swept.labels("failed").inc(len(report.failed))

    def set_uploads(self, counts: Mapping[str, int] | None) -> None:
        """None: the database did not answer; the series vanish rather than
        show stale numbers (``uploader_ready_check`` says why)."""
        self.uploads.clear()
        if counts is not None:
            for status in sorted(set(STATUSES) | set(counts)):
                self.uploads.labels(status).set(counts.get(status, 0))

    def set_outbox(self, stats: Any, now: Any, merge_jobs: int | None = None) -> None:
        """``stats`` is a store.outbox.OutboxStats, or None when the database
        did not answer (the series then vanish rather than go stale);
        ``merge_jobs`` the open jobs of the merge queue (None: no queue)."""
        self.deliveries_failed.clear()
        for name in [labels[0] for labels in list(self._queue_names)]:
            self.queue_depth.remove(name)
        self._queue_names.clear()
        if merge_jobs is not None:
            self.queue_depth.labels("merge").set(merge_jobs)
            self._queue_names.add(("merge",))
        if stats is None:
            self.outbox_lag.set(0)
            return
        oldest = stats.oldest_pending_at
        self.outbox_lag.set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
        depths = {"outbox": stats.pending_events, **stats.pending_deliveries}
        for queue, depth in depths.items():
            self.queue_depth.labels(queue).set(depth)
            self._queue_names.add((queue,))
        for sink, count in stats.failed_deliveries.items():
            self.deliveries_failed.labels(sink).set(count)

    def set_ready(self, check: str, ok: bool) -> bool:
        """Record a readiness result; True when it differs from the last one
        (the first result counts as a change only when failing)."""
        self.ready.labels(check).set(1 if ok else 0)
        changed = self._ready.get(check, True) != ok
        self._ready[check] = ok
        return changed

    def render(self) -> bytes:
        return generate_latest(self.registry)


class TimedLocks:
    """Wraps a Locks backend to time every acquisition: the service and the
    expiry sweep take locks through it unchanged."""

    def __init__(self, inner: Locks, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def lock(self, name: str, *, ttl: float,
             wait: float | None = None) -> AsyncContextManager[LockHandle]:
        return self._lock(name, ttl=ttl, wait=wait)

    @asynccontextmanager
    async def _lock(self, name: str, *, ttl: float,
                    wait: float | None) -> AsyncIterator[LockHandle]:
        kind = name.split(":", 1)[0]  # "upload:<id>" -> "upload": bounded labels
        start = time.monotonic()
        acquired = False
        try:
            async with self.inner.lock(name, ttl=ttl, wait=wait) as held:
                acquired = True
                self._observe(kind, "acquired", start)
                yield held
        except LockTimeout:
            if not acquired:
                self._observe(kind, "timeout", start)
            raise
        except Exception:
            if not acquired:
                self._observe(kind, "error", start)  # backend down
            raise

    def _observe(self, kind: str, outcome: str, start: float) -> None:
        self.metrics.lock_wait.labels(kind, outcome).observe(time.monotonic() - start)

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Backend extras (RedisLocks.client) stay reachable.
        return getattr(self.inner, name)
