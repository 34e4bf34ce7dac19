"""Webhooks: signed per Standard Webhooks (checked with the standardwebhooks
verifier), retried with backoff, given up after webhooks.retry_for and
visible in metrics, filtered per URL; a hanging receiver never slows the
API (issue 16 item 2)."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from support import chunks_of, md5, wait_until_async

from .receiver import Receiver

KiB = 1 << 10
CS = 64 * KiB
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


@pytest.fixture
def receiver(receivers) -> Receiver:
    return receivers()


@pytest.fixture
def other_receiver(receivers) -> Receiver:
    return receivers()


@pytest.fixture
def webhook_settings() -> dict[str, Any]:
    return {}


@pytest.fixture
def config_overrides(store_overrides, receiver, other_receiver, webhook_settings):
    overrides: dict[str, Any] = {
        "events": {"poll_interval": 0.1},
        "webhooks": {"endpoints": [
            {"url": receiver.url, "secret": SECRET, "name": "app"},
            {"url": other_receiver.url, "secret": SECRET, "name": "done-only",
             "events": ["upload.completed"]}],
            "backoff_base": 0.05, "backoff_max": 0.2, "timeout": 5, **webhook_settings}}
    if store_overrides:
        overrides["store"] = store_overrides
    return overrides


def metric(runtime, name: str, **labels: str) -> float:
    return runtime.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_retried_until_delivered_and_signed(api, runtime, receiver, other_receiver):
    receiver.answers = [500, 500]  # then the default 200
    up = await api.init(10, CS)
    await wait_until_async(lambda: len(receiver.received) >= 3, "three attempts")
    first, second, third = receiver.received[:3]
    # One event, three attempts, one id: receivers deduplicate by it.
    assert {r.headers["webhook-id"] for r in (first, second, third)} == {
        third.json()["id"]}
    doc = Webhook(SECRET).verify(third.body, third.headers)
    assert doc["type"] == "upload.created" and doc["data"]["upload"]["upload_id"] == \
        up["upload_id"]
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(third.body,
                                                                        third.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(third.body.replace(b"created", b"deleted"), third.headers)
    await wait_until_async(lambda: metric(runtime, "uploader_events_delivered_total",
                                          sink="webhook:app") == 1, "the delivery recorded")
    assert metric(runtime, "uploader_events_retried_total", sink="webhook:app") == 2
    # Recorded as delivered: nothing is left to send to this endpoint.
    stats = await runtime.store.outbox_stats()
    assert "webhook:app" not in stats.pending_deliveries
    assert "webhook:app" not in stats.failed_deliveries
    assert len(receiver.received) == 3
    # The per-URL filter: only completed events go to the second endpoint.
    assert other_receiver.received == []
    data = os.urandom(CS)
    up2 = await api.init(len(data), CS)
    assert (await api.put_chunk(up2["upload_id"], 0, data))[0] == 200
    code, done = await api.complete(up2["upload_id"], md5(data))
    assert code == 200
    await wait_until_async(lambda: other_receiver.received, "the completed event")
    assert [r.json()["type"] for r in other_receiver.received] == ["upload.completed"]


@pytest.mark.parametrize("webhook_settings", [{"retry_for": 0.5}])
async def test_given_up_after_retry_for_and_visible(api, runtime, receiver, other_receiver):
    receiver.default = 503
    await api.init(10, CS)
    await wait_until_async(lambda: metric(runtime, "uploader_events_failed_total",
                                          sink="webhook:app") == 1, "the delivery given up")
    attempts = len(receiver.received)
    assert attempts >= 2  # retried before giving up
    resp = await api.call("GET", "/metrics")
    text = resp.body.decode()
    assert 'uploader_event_deliveries_failed{sink="webhook:app"} 1.0' in text
    assert 'uploader_events_failed_total{sink="webhook:app"} 1.0' in text
    # Kept as failed, not pending: no further attempt is scheduled.
    stats = await runtime.store.outbox_stats()
    assert stats.failed_deliveries == {"webhook:app": 1}
    assert "webhook:app" not in stats.pending_deliveries


async def test_a_hanging_receiver_does_not_slow_uploads(api, runtime, receiver, other_receiver):
    receiver.default = "hang"
    data = os.urandom(8 * CS)
    up = await api.init(len(data), CS)
    await wait_until_async(lambda: receiver.hanging >= 1, "the receiver to hang")
    # Every chunk and the complete are answered while the receiver holds
    # the delivery of upload.created open (no timing threshold: they
    # finish at all, and the receiver is still hanging afterwards).
    for index, piece in enumerate(chunks_of(data, CS)):
        code, doc = await api.put_chunk(up["upload_id"], index, piece)
        assert code == 200, doc
    code, done = await api.complete(up["upload_id"], md5(data))
    assert code == 200 and done["status"] == "completed"
    assert receiver.hanging >= 1
    # The other endpoint is not held up.
    await wait_until_async(lambda: other_receiver.received, "the other endpoint's delivery")
    receiver.release.set()
    await wait_until_async(lambda: metric(runtime, "uploader_events_delivered_total",
                                          sink="webhook:app") == 2, "both deliveries")
