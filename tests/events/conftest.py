"""Fixtures for the events tests: the app with a real Redis stream sink (a
stream key of each test's own, deleted afterwards), on SQLite and MariaDB,
and small helpers to read what was delivered."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any, Callable, Iterator

import pytest
import redis

from store.conftest import MySQLServer, mysql_server, unreachable  # noqa: F401

from .receiver import Receiver

REDIS_URL = os.environ.get("UPLOADER_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture
def redis_sync() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=10)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        unreachable(f"Redis not reachable at {REDIS_URL}: {exc}")
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


def stream_events(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    """Every event on the stream, as the JSON documents consumers read."""
    return [json.loads(fields[b"event"]) for _, fields in client.xrange(key)]


async def until(condition: Callable[[], Any], timeout: float = 30.0,
                what: str = "the condition") -> Any:
    """Bounded poll of a condition (never a bare sleep as synchronisation),
    yielding to the test's loop so the in-process server runs meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := condition()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


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
