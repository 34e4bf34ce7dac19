"""The outbox dispatcher: runs in every instance, takes undispatched events
with a lease (several instances never work on the same ones at once), hands
them to the Redis stream, then records them dispatched together with one
pending delivery per matching webhook endpoint.

At least once: an instance that dies after XADD but before recording
leaves its lease to run out; the events are published again by whoever
takes them next. Nothing is dropped: an event leaves the outbox only
``events.retention`` after it was dispatched and delivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from ..config import EventsConfig, WebhooksConfig
from ..metrics import Metrics
from ..models import utcnow
from ..store.base import MetadataStore
from ..store.outbox import new_token

if TYPE_CHECKING:  # their clients are imported only where they are configured
    from .stream import StreamSink
    from .webhooks import WebhookSender

log = logging.getLogger("uploader.events")
PRUNE_EVERY = 300.0  # seconds between removals of events past retention


class Dispatcher:
    def __init__(self, config: EventsConfig, webhooks: WebhooksConfig, store: MetadataStore,
                 metrics: Metrics) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.stream: StreamSink | None = None
        if config.redis_url:
            from .stream import StreamSink
            self.stream = StreamSink(config.redis_url, config.stream, config.stream_maxlen)
        self.endpoints = list(webhooks.endpoints)
        self.sender: WebhookSender | None = None
        if self.endpoints:
            from .webhooks import WebhookSender
            self.sender = WebhookSender(webhooks, store, metrics, config.poll_interval)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._pruned_at = 0.0

    def notify(self, _event: object = None) -> None:
        """A change committed an event here: dispatch now, not at the next poll."""
        self._wake.set()

    def start(self) -> None:
        if not self.config.enabled or self._tasks:
            return
        self._stopping = False
        self._tasks.append(asyncio.create_task(self._loop()))
        if self.sender is not None:
            self._tasks.append(asyncio.create_task(self.sender.run()))

    async def _loop(self) -> None:
        while not self._stopping:
            done = 0
            try:
                done = await self.dispatch_once()
                await self._prune()
            except Exception as exc:  # database away: the events wait in the outbox
                log.warning("event dispatch failed, retrying: %s", exc)
            if done >= self.config.batch_size:
                continue  # a backlog: no pause
            try:
                await asyncio.wait_for(self._wake.wait(), self.config.poll_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def dispatch_once(self) -> int:
        """Dispatch one batch; returns how many events it took."""
        now = utcnow()
        token = new_token()
        batch = await self.store.claim_events(
            token, now, now + timedelta(seconds=self.config.claim_ttl), self.config.batch_size)
        if not batch:
            return 0
        if self.stream is not None:
            try:
                await self.stream.publish(batch)
            except Exception as exc:
                # Left claimed: the lease (events.claim_ttl) is the pause
                # before this batch is tried again.
                self.metrics.events_retried.labels(self.stream.name).inc(len(batch))
                log.warning("could not publish %d events to the stream, retrying in %.0fs: %s",
                            len(batch), self.config.claim_ttl, exc)
                return 0
            self.metrics.events_delivered.labels(self.stream.name).inc(len(batch))
        deliveries = [(event.seq, endpoint.sink) for event in batch
                      for endpoint in self.endpoints if endpoint.wants(event.type)]
        await self.store.mark_dispatched(token, [e.seq for e in batch], utcnow(), deliveries)
        if deliveries and self.sender is not None:
            self.sender.notify()
        return len(batch)

    async def _prune(self) -> None:
        if time.monotonic() - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = time.monotonic()
        removed = await self.store.prune_events(
            utcnow() - timedelta(seconds=self.config.retention))
        if removed:
            log.info("removed %d events older than events.retention", removed)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self.sender is not None:
            await self.sender.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.stream is not None:
            await self.stream.close()
