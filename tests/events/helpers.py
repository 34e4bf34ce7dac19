"""What the events tests share: where their Redis is, and reading a stream
as consumers see it."""

from __future__ import annotations

import json
import os
from typing import Any

import redis

REDIS_URL = os.environ.get("TEST_UPLOADER_REDIS_URL", "redis://127.0.0.1:6379/13")


def stream_events(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    """Every event on the stream, as the JSON documents consumers read."""
    return [json.loads(fields[b"event"]) for _, fields in client.xrange(key)]
