"""Expiry: abandoned uploads lose their bytes, then their rows (docs/architecture.md).

A jittered PeriodicCallback runs :meth:`Expirer.sweep`; under a lock only one
instance sweeps at a time. One failing item is logged and skipped.

A sweep works in batches of ``expiry.batch_size``: find that many idle
uploads, claim them in one transaction (a conditional status change that
re-checks their activity, so an upload touched since the decision is left
alone), remove their bytes, then their rows in one transaction, and yield to
the event loop before the next batch. Memory holds one batch, whatever the
number of expired uploads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Sequence

from tornado.ioloop import PeriodicCallback

from . import event_model as events
from .config import Config
from .locks.base import LockTimeout
from .metrics import Metrics
from .models import ABORTED, EXPIRABLE, Upload, utcnow
from .recovery import publish_recorded_merges, remove_completed_chunks, remove_dead_merges
from .service import UploadService

log = logging.getLogger("uploader.expiry")
REMOVALS_AT_ONCE = 4  # uploads whose bytes a sweep removes concurrently
LISTED = 1000  # expired ids a report keeps (for `uploader cleanup`); the count is exact


@dataclass
class SweepReport:
    expired: list[str] = field(default_factory=list)  # the first LISTED of them
    orphans: list[str] = field(default_factory=list)
    stray_parts: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: bool = False  # another instance was sweeping
    expired_count: int = 0
    batches: int = 0
    seconds: float = 0.0  # how long it held the expiry lock

    def add_expired(self, upload_ids: Sequence[str]) -> None:
        self.expired_count += len(upload_ids)
        self.expired += upload_ids[:max(0, LISTED - len(self.expired))]

    def summary(self) -> str:
        if self.skipped:
            return "another instance is sweeping; nothing done"
        return (f"expired {self.expired_count} uploads, removed {len(self.orphans)} orphan "
                f"folders and {self.stray_parts} stray part files, {len(self.failed)} failed "
                f"({self.batches} batches)")


class Expirer:
    def __init__(self, config: Config, service: UploadService, metrics: Metrics) -> None:
        self.config = config
        self.service = service
        self.metrics = metrics
        self._timer: PeriodicCallback | None = None

    @property
    def timer(self) -> PeriodicCallback | None:
        """The running sweep timer (None when stopped or disabled)."""
        return self._timer

    def start(self) -> None:
        if not self.config.expiry.enabled:
            return
        self._timer = PeriodicCallback(self._tick, self.config.expiry.interval * 1000,
                                       jitter=self.config.expiry.jitter)
        self._timer.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    async def _tick(self) -> None:
        try:
            report = await self.sweep()
            log.info("expiry sweep: %s in %.2fs", report.summary(), report.seconds)
        except Exception:
            self.metrics.sweeps.labels("failed").inc()
            log.exception("expiry sweep failed")

    async def sweep(self) -> SweepReport:
        report = SweepReport()
        service = self.service
        try:
            async with service.locks.sweep():
                started = time.monotonic()
                self.metrics.sweep_started()
                try:
                    await self._sweep(report)
                finally:
                    report.seconds = time.monotonic() - started
                    self.metrics.sweep_finished(report.seconds)
        except LockTimeout:
            report.skipped = True
        self.metrics.observe_sweep(report)
        return report

    async def _sweep(self, report: SweepReport) -> None:
        service = self.service
        now = utcnow()
        # Rows left ``aborted`` by a delete or an expiry that failed half-way
        # (bytes first, then row) are retried once idle for stale_part_age:
        # otherwise nothing would ever find them again.
        await self._expire_all(now - timedelta(seconds=self.config.expiry.ttl), EXPIRABLE,
                               report)
        await self._expire_all(now - timedelta(seconds=self.config.storage.stale_part_age),
                               (ABORTED,), report)
        await self._orphans(report)
        # A staged file of a recorded merge is not a stray part; one that can
        # never be published is, whatever its age.
        await publish_recorded_merges(service)
        report.stray_parts = await remove_dead_merges(service, at_start=False)
        report.stray_parts += await service.storage.recover(
            older_than=self.config.storage.stale_part_age)

    async def _expire_all(self, cutoff: datetime, statuses: Sequence[str],
                          report: SweepReport) -> None:
        """Every upload in ``statuses`` idle since ``cutoff``, a batch at a
        time. Each row found leaves the set: claimed (aborted, then gone or
        retried later) or touched since (its activity is newer than cutoff),
        so the loop ends."""
        size = self.config.expiry.batch_size
        while True:
            found = await self.service.store.find_expired(cutoff, statuses, limit=size)
            if not found:
                return
            removed = await self._expire_batch(found, cutoff, statuses, report)
            report.add_expired(removed)
            report.batches += 1
            self.metrics.observe_sweep_batch(len(removed))
            if len(found) < size:
                return
            # Requests queued on the loop (and on SQLite's one connection) run
            # between batches: a long sweep slows them by a batch, no more.
            await asyncio.sleep(0)

    async def _expire_batch(self, found: list[Upload], cutoff: datetime,
                            statuses: Sequence[str], report: SweepReport) -> list[str]:
        service = self.service
        now = utcnow()
        by_id = {upload.upload_id: upload for upload in found}
        # upload.expired goes with each change; a retry of an aborted row
        # reports nothing new.
        made = {upload.upload_id: service.events.make(
                    events.EXPIRED, upload.replace(status=ABORTED, updated_at=now))
                for upload in found if upload.status != ABORTED}
        # Aborted first, atomically re-checking the decision: a chunk that
        # started or was recorded since keeps its upload, and one arriving now
        # is refused rather than recorded against bytes about to vanish.
        claimed = await service.store.claim_expired(
            [(upload_id, made.get(upload_id)) for upload_id in by_id], statuses, cutoff, now)
        for upload_id in claimed:
            event = made.get(upload_id)
            if event is not None:
                service.events.written(event)
        # Bytes of several uploads at once: each removal is a few syscalls in
        # the I/O pool (or requests to S3), mostly waiting.
        slots = asyncio.Semaphore(REMOVALS_AT_ONCE)

        async def remove(upload_id: str) -> str | None:
            async with slots:
                try:
                    # A chunk commit that passed its status check before the
                    # claim holds this lock: leave the row aborted for the retry.
                    async with service.locks.upload(upload_id, wait=0):
                        await service.storage.delete_upload(by_id[upload_id])
                    return upload_id
                except LockTimeout:
                    return None
                except Exception:
                    log.exception("could not expire upload %s", upload_id)
                    report.failed.append(upload_id)
                    return None
        results = await asyncio.gather(*(remove(upload_id) for upload_id in claimed))
        gone = [upload_id for upload_id in results if upload_id is not None]
        await service.store.delete_uploads(gone)
        return gone

    async def _orphans(self, report: SweepReport) -> None:
        service = self.service
        ids = await service.storage.temp_upload_ids()
        known = await service.store.existing_ids(ids) if ids else set()
        for upload_id in ids:
            if upload_id in known:
                continue
            try:
                await service.storage.delete_chunks(upload_id)
                report.orphans.append(upload_id)
            except Exception:
                log.exception("could not remove orphan folder %s", upload_id)
                report.failed.append(upload_id)
        # A folder with a row is an orphan too once its upload completed.
        removed, failed = await remove_completed_chunks(service, sorted(known))
        report.orphans += removed
        report.failed += failed
