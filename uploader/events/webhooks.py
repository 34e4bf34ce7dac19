"""Webhook deliveries: signed POSTs (Standard Webhooks), retried with
exponential backoff until ``webhooks.retry_for`` after the event, then kept
as failed.

Deliveries are rows of ``event_deliveries`` (one per event and endpoint),
claimed with a lease like the events, so any instance may send any of them
and a dead sender's claims are taken over. Sends run as their own tasks, at
most ``webhooks.concurrency`` at once: a slow or dead receiver holds a slot
until ``webhooks.timeout``, never a request of the API.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timedelta, timezone

from standardwebhooks.webhooks import Webhook
from tornado.httpclient import AsyncHTTPClient

from ..config import WebhookEndpoint, WebhooksConfig
from ..metrics import Metrics
from ..models import utcnow
from ..store.base import MetadataStore
from ..store.outbox import DELIVERED, FAILED, PENDING, Delivery, new_token

log = logging.getLogger("uploader.events")
LEASE_MARGIN = 30.0  # seconds a claim outlives the POST's own timeout


def signed_headers(signer: Webhook, event_id: str, payload: str,
                   now: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers: the id stays the same across
    retries (receivers deduplicate by it); the timestamp is this attempt's."""
    return {"webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(event_id, now, payload)}


def next_delay(config: WebhooksConfig, attempts: int) -> float:
    """Exponential backoff with jitter (half fixed, half random), so
    receivers coming back are not hit by every instance at once."""
    delay = min(config.backoff_max, config.backoff_base * 2 ** max(0, attempts - 1))
    return delay / 2 + random.random() * delay / 2


class WebhookSender:
    def __init__(self, config: WebhooksConfig, store: MetadataStore, metrics: Metrics,
                 poll_interval: float) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.poll_interval = poll_interval
        self.endpoints: dict[str, WebhookEndpoint] = {e.sink: e for e in config.endpoints}
        self.signers = {e.sink: Webhook(e.secret) for e in config.endpoints}
        self.client = AsyncHTTPClient(force_instance=True, max_clients=config.concurrency)
        self._wake = asyncio.Event()
        self._sends: set[asyncio.Task[None]] = set()
        self._stopping = False

    def notify(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            free = self.config.concurrency - len(self._sends)
            claimed = 0
            if free > 0:
                claimed = await self._claim(free)
            if claimed and claimed == free:
                continue  # more may be due
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def _claim(self, limit: int) -> int:
        now = utcnow()
        token = new_token()
        lease = timedelta(seconds=self.config.timeout + LEASE_MARGIN)
        try:
            batch = await self.store.claim_deliveries(token, list(self.endpoints), now,
                                                      now + lease, limit)
        except Exception as exc:  # the database is away: try at the next poll
            log.warning("could not claim webhook deliveries: %s", exc)
            return 0
        for delivery in batch:
            task = asyncio.create_task(self._send(token, delivery))
            self._sends.add(task)
            task.add_done_callback(self._sent)
        return len(batch)

    def _sent(self, task: "asyncio.Task[None]") -> None:
        self._sends.discard(task)
        self._wake.set()  # a slot is free
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery task failed", exc_info=task.exception())

    async def _send(self, token: str, delivery: Delivery) -> None:
        endpoint = self.endpoints[delivery.sink]
        event = delivery.event
        now = datetime.now(timezone.utc)
        headers = {"Content-Type": "application/json", "User-Agent": "uploader-webhooks",
                   **signed_headers(self.signers[delivery.sink], event.event_id,
                                    event.payload, now)}
        error: str | None = None
        try:
            response = await self.client.fetch(
                endpoint.url, method="POST", body=event.payload.encode(), headers=headers,
                connect_timeout=self.config.timeout, request_timeout=self.config.timeout,
                follow_redirects=False, raise_error=False)
            if not 200 <= response.code < 300:
                error = (f"HTTP {response.code}" if response.code != 599
                         else f"no answer: {response.error}")
        except Exception as exc:  # DNS, TLS, refused connections
            error = f"{type(exc).__name__}: {exc}"
        await self._record(token, delivery, error)

    async def _record(self, token: str, delivery: Delivery, error: str | None) -> None:
        attempts = delivery.attempts + 1
        now = utcnow()
        deadline = delivery.event.occurred_at + timedelta(seconds=self.config.retry_for)
        sink = delivery.sink
        if error is None:
            state, next_at, counter = DELIVERED, now, self.metrics.events_delivered
        elif now >= deadline:
            state, next_at, counter = FAILED, now, self.metrics.events_failed
            log.warning("webhook %s gave up on event %s after %d attempts: %s", sink,
                        delivery.event.event_id, attempts, error)
        else:
            # The last attempt lands on the deadline, not beyond it.
            state, counter = PENDING, self.metrics.events_retried
            next_at = min(now + timedelta(seconds=next_delay(self.config, attempts)), deadline)
            log.info("webhook %s: event %s attempt %d failed (%s), retrying", sink,
                     delivery.event.event_id, attempts, error)
        try:
            await self.store.finish_delivery(token, delivery.seq, sink, state=state,
                                             attempts=attempts, next_attempt_at=next_at,
                                             now=now, error=error)
        except Exception as exc:
            # Not recorded: the lease runs out and the delivery is sent again
            # (at least once); it is counted when an outcome is recorded.
            log.warning("could not record webhook delivery of %s: %s",
                        delivery.event.event_id, exc)
            return
        counter.labels(sink).inc()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in list(self._sends):
            task.cancel()  # their leases run out; another attempt follows
        await asyncio.gather(*self._sends, return_exceptions=True)
        self.client.close()
