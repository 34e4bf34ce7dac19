"""Readiness of the parts a request needs, and the shared upload counts that
``/metrics`` reports: what the operator endpoints ask of the backends, so the
handlers never touch them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from .errors import UploadError
from .models import utcnow
from .locks.base import Locks
from .metrics import Metrics
from .storage.base import Storage
from .store.base import MetadataStore

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


class Health:
    def __init__(self, store: MetadataStore, locks: Locks, storage: Storage,
                 metrics: Metrics, backends: dict[str, str] | None = None,
                 merge_depth: Callable[[], Awaitable[int | None]] | None = None) -> None:
        self.store = store
        # Open jobs of the merge queue (merge.queue redis), for /metrics.
        self.merge_depth = merge_depth
        self.locks = locks
        self.storage = storage
        self.metrics = metrics
        # The configured backend behind each check, for /readyz to name
        # (an operator reading "locks: unavailable" needs to know which).
        self.backends = backends or {}

    async def checks(self) -> dict[str, str]:
        """Each part's readiness: "ok" or why not. Changes are logged (probes
        come every few seconds, so steady states are not)."""
        names = ("database", "locks", "storage")
        results = await asyncio.gather(_check(self.store.ping), _check(self.locks.ping),
                                       _check(self.storage.ping))
        checks = dict(zip(names, results))
        for name, result in checks.items():
            if self.metrics.set_ready(name, result == "ok"):
                log.log(logging.INFO if result == "ok" else logging.WARNING,
                        "readiness: %s is %s", name, result)
        return checks

    async def upload_counts(self) -> dict[str, int] | None:
        """Uploads by status from the database (the same on every instance),
        or None when it does not answer in time."""
        try:
            return await asyncio.wait_for(self.store.count_by_status(), CHECK_TIMEOUT)
        except (asyncio.TimeoutError, UploadError):
            # Metrics matter most during an outage: answer without the gauge.
            return None

    async def outbox(self) -> None:
        """Outbox lag and queue depths into the metrics, read now from the
        database and Redis (the same on every instance); a source that does
        not answer in time is left out."""
        try:
            stats = await asyncio.wait_for(self.store.outbox_stats(), CHECK_TIMEOUT)
        except (asyncio.TimeoutError, UploadError):
            stats = None
        merges = None
        if self.merge_depth is not None:
            try:
                merges = await asyncio.wait_for(self.merge_depth(), CHECK_TIMEOUT)
            except asyncio.TimeoutError:
                pass
        self.metrics.set_outbox(stats, utcnow(), merges)
