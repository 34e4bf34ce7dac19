"""Fixtures for the events tests: the app with a real Redis stream sink (a
stream key of each test's own, deleted afterwards), on SQLite and MariaDB,
and real HTTP receivers (tests/events/receiver.py)."""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterator

import pytest
import redis

from support import MySQLServer, require_redis

from .helpers import REDIS_URL
from .receiver import Receiver


@pytest.fixture
def redis_sync() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(require_redis(REDIS_URL), socket_connect_timeout=3,
                                  socket_timeout=10)
    yield client
    client.close()


@pytest.fixture
def stream_key(redis_sync: redis.Redis) -> Iterator[str]:
    key = f"uploader-test:events:{uuid.uuid4().hex}"
    yield key
    redis_sync.delete(key)


@pytest.fixture(params=["sqlite", "mysql"])
def store_overrides(request) -> dict[str, Any]:
    if request.param == "sqlite":
        return {}
    server: MySQLServer = request.getfixturevalue("mysql_server")
    return {"backend": "mysql", "mysql_dsn": server.create_database(), "pool_size": 4}


@pytest.fixture
def config_overrides(store_overrides: dict[str, Any], stream_key: str) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "events": {"redis_url": REDIS_URL, "stream": stream_key, "poll_interval": 0.2}}
    if store_overrides:
        overrides["store"] = store_overrides
    return overrides


@pytest.fixture
def receivers(io_loop) -> Iterator[Callable[[], Receiver]]:
    """Starts real HTTP receivers (webhook endpoints, hooks) on free ports."""
    started: list[Receiver] = []

    def start() -> Receiver:
        started.append(Receiver().start())
        return started[-1]
    yield start
    for receiver in started:
        io_loop.run_sync(receiver.stop)
