"""Redis only: the key, its expiry, the watchdog and what it does when the
lock is lost (the shared behaviour is in test_conformance.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from uploader.locks.base import LockTimeout

from .helpers import RedisHarness

pytestmark = pytest.mark.redis


async def test_redis_uses_prefixed_key_and_deletes_it(io_loop, redis_harness: RedisHarness,
                                                      lock_name):
    locks, client = redis_harness.make(), redis_harness.client
    key = redis_harness.prefix + lock_name
    async with locks.lock(lock_name, ttl=30):
        assert await client.exists(key) == 1
        assert 0 < await client.pttl(key) <= 30_000  # always an expiry
    assert await client.exists(key) == 0


async def test_redis_watchdog_keeps_lock_past_ttl(io_loop, redis_harness: RedisHarness,
                                                  lock_name):
    locks, client = redis_harness.make(), redis_harness.client
    key = redis_harness.prefix + lock_name
    async with locks.lock(lock_name, ttl=1):
        token = await client.get(key)
        extensions = 0
        previous = await client.pttl(key)
        # Four resets at ttl/3 each take the holder past its 1 s ttl. Poll
        # the key's remaining time until then (bounded: ~10 s at most).
        for _ in range(400):
            if extensions >= 4:
                break
            await asyncio.sleep(0.025)
            remaining = await client.pttl(key)
            assert remaining > 0, "the lock expired while held"
            if remaining > previous:
                extensions += 1
            previous = remaining
        assert extensions >= 4
        assert await client.get(key) == token  # still ours
        with pytest.raises(LockTimeout):
            async with locks.lock(lock_name, ttl=1, wait=0):
                pytest.fail("acquired a held lock")
    assert await client.exists(key) == 0


async def test_redis_watchdog_stops_when_lock_lost(io_loop, redis_harness: RedisHarness,
                                                   lock_name, caplog):
    locks, client = redis_harness.make(), redis_harness.client
    key = redis_harness.prefix + lock_name
    with caplog.at_level(logging.WARNING, logger="uploader.locks.redis"):
        async with locks.lock(lock_name, ttl=0.3):
            await client.set(key, b"someone-else", px=30_000)
            # Poll (bounded) until the watchdog's next tick notices the loss.
            for _ in range(400):
                if any("lost while held" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
            assert any("lost while held" in r.getMessage() for r in caplog.records)
            # It did not overwrite the other owner's ttl or value.
            assert await client.get(key) == b"someone-else"
            assert await client.pttl(key) > 1000
    assert await client.get(key) == b"someone-else"
