"""Fixtures for the lock tests: each backend built on the test's own IOLoop."""

from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest
import redis

from support import require_redis
from uploader.locks.memory import MemoryLocks
from uploader.locks.redis import RedisLocks

REDIS_URL = os.environ.get("TEST_UPLOADER_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return require_redis(REDIS_URL)


@pytest.fixture
def redis_locks(io_loop, redis_url: str) -> Iterator[RedisLocks]:
    locks = RedisLocks(redis_url)
    yield locks
    io_loop.run_sync(locks.close)


@pytest.fixture
def redis_client(io_loop, redis_url: str) -> Iterator[redis.asyncio.Redis]:
    """A separate connection to inspect and tamper with lock keys."""
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    io_loop.run_sync(client.aclose)


@pytest.fixture(params=["memory", "redis"])
def locks(request, io_loop):
    if request.param == "memory":
        memory = MemoryLocks()
        yield memory
        io_loop.run_sync(memory.close)
    else:
        yield request.getfixturevalue("redis_locks")


@pytest.fixture
def lock_name() -> str:
    """Unique per test, so runs never meet each other's keys."""
    return f"test-{uuid.uuid4().hex}"
