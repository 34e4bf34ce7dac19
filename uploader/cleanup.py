"""Expiry: abandoned uploads lose their bytes, then their rows (docs/architecture.md).

A jittered PeriodicCallback runs :meth:`Expirer.sweep`; under a lock only one
instance sweeps at a time. One failing item is logged and skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from tornado.ioloop import PeriodicCallback

from .config import Config
from .events import model as events
from .locks.base import LockTimeout
from .metrics import Metrics
from .models import ABORTED, EXPIRABLE, utcnow
from .recovery import publish_recorded_merges, remove_dead_merges
from .service import UploadService

log = logging.getLogger("uploader.expiry")


@dataclass
class SweepReport:
    expired: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    stray_parts: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: bool = False  # another instance was sweeping

    def summary(self) -> str:
        if self.skipped:
            return "another instance is sweeping; nothing done"
        return (f"expired {len(self.expired)} uploads, removed {len(self.orphans)} orphan "
                f"folders and {self.stray_parts} stray part files, {len(self.failed)} failed")


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
            log.info("expiry sweep: %s", report.summary())
        except Exception:
            self.metrics.sweeps.labels("failed").inc()
            log.exception("expiry sweep failed")

    async def sweep(self) -> SweepReport:
        report = SweepReport()
        service = self.service
        try:
            async with service.locks.sweep():
                now = utcnow()
                cutoff = now - timedelta(seconds=self.config.expiry.ttl)
                # Rows left ``aborted`` by a delete or an expiry that failed
                # half-way (bytes first, then row) are retried once idle for
                # stale_part_age: otherwise nothing would ever find them again.
                retry = now - timedelta(seconds=self.config.storage.stale_part_age)
                found = await service.store.find_expired(cutoff, EXPIRABLE)
                found += await service.store.find_expired(retry, (ABORTED,))
                for upload in found:
                    try:
                        await self._expire(upload.upload_id, report)
                    except Exception:
                        log.exception("could not expire upload %s", upload.upload_id)
                        report.failed.append(upload.upload_id)
                await self._orphans(report)
                # A staged file of a recorded merge is not a stray part; one
                # that can never be published is, whatever its age.
                await publish_recorded_merges(service)
                report.stray_parts = await remove_dead_merges(service, at_start=False)
                report.stray_parts += await service.storage.recover(
                    older_than=self.config.storage.stale_part_age)
        except LockTimeout:
            report.skipped = True
        self.metrics.observe_sweep(report)
        return report

    async def _expire(self, upload_id: str, report: SweepReport) -> None:
        service = self.service
        try:
            # A merge in progress holds this lock: such an upload is not idle.
            async with service.locks.upload(upload_id, wait=0):
                # Aborted first, so a chunk arriving now is refused, not
                # recorded against bytes about to vanish. upload.expired goes
                # with that change; a retry of an aborted row reports nothing.
                upload = await service.store.get_upload(upload_id, with_chunks=False)
                if upload is None:
                    return
                now = utcnow()
                event = service.events.make(events.EXPIRED,
                                            upload.replace(status=ABORTED, updated_at=now))
                if await service.store.set_status(upload_id, ABORTED, EXPIRABLE, event, at=now):
                    service.events.written(event)
                elif not await service.store.set_status(upload_id, ABORTED, (ABORTED,)):
                    return
                upload = await service.store.get_upload(upload_id, with_chunks=False)
                if upload is not None:
                    await service.remove(upload)
                    report.expired.append(upload_id)
        except LockTimeout:
            return

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
