"""The Redis Streams sink: one XADD per event, trimmed with MAXLEN ~.

Consumers read with a consumer group (XREADGROUP, XACK). Entries carry the
event id: delivery is at least once (a dispatcher that dies after XADD but
before it records the dispatch publishes again), so consumers deduplicate by
``id``.
"""

from __future__ import annotations

from typing import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..event_model import OutboxEvent

SINK = "stream"


class StreamSink:
    name = SINK

    def __init__(self, url: str, stream: str, maxlen: int) -> None:
        self.stream = stream
        self.maxlen = maxlen
        # Short timeouts: a dead Redis delays events (they stay in the
        # outbox), it must not hold the dispatcher for long.
        self.client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        """All of ``events`` in order, in one round trip; raises on failure
        (some may have been added: the caller retries them all)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(self.stream, {"id": event.event_id, "type": event.type,
                                        "upload_id": event.upload_id, "event": event.payload},
                          maxlen=self.maxlen, approximate=True)
            await pipe.execute()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.client.aclose()
