"""One conformance suite for every Locks backend (memory, redis), then the
Redis-only behaviour: watchdog, loss of the lock, outage."""

from __future__ import annotations

import asyncio
import logging

import pytest

from uploader.errors import Unavailable
from uploader.locks.base import LockTimeout
from uploader.locks.memory import MemoryLocks
from uploader.locks.redis import KEY_PREFIX, RedisLocks


async def test_mutual_exclusion(io_loop, locks, lock_name):
    events: list[str] = []
    a_inside = asyncio.Event()
    a_may_leave = asyncio.Event()
    b_started = asyncio.Event()

    async def holder() -> None:
        async with locks.lock(lock_name, ttl=30):
            events.append("a in")
            a_inside.set()
            await a_may_leave.wait()
            events.append("a out")

    async def waiter() -> None:
        await a_inside.wait()
        b_started.set()
        async with locks.lock(lock_name, ttl=30, wait=30):
            events.append("b in")

    tasks = [asyncio.ensure_future(holder()), asyncio.ensure_future(waiter())]
    await b_started.wait()
    # While a holds it, nobody else gets it (b is trying meanwhile).
    with pytest.raises(LockTimeout):
        async with locks.lock(lock_name, ttl=30, wait=0):
            events.append("intruder in")
    assert events == ["a in"]
    a_may_leave.set()
    await asyncio.gather(*tasks)
    assert events == ["a in", "a out", "b in"]


async def test_wait_zero_fails_while_held(io_loop, locks, lock_name):
    async with locks.lock(lock_name, ttl=30):
        with pytest.raises(LockTimeout):
            async with locks.lock(lock_name, ttl=30, wait=0):
                pytest.fail("acquired a held lock")


async def test_wait_n_times_out(io_loop, locks, lock_name):
    async with locks.lock(lock_name, ttl=30):
        with pytest.raises(LockTimeout):
            async with locks.lock(lock_name, ttl=30, wait=0.3):
                pytest.fail("acquired a held lock")


async def test_release_frees(io_loop, locks, lock_name):
    async with locks.lock(lock_name, ttl=30):
        pass
    async with locks.lock(lock_name, ttl=30, wait=0):
        pass
    # Also after the body raised.
    with pytest.raises(RuntimeError):
        async with locks.lock(lock_name, ttl=30):
            raise RuntimeError("body failed")
    async with locks.lock(lock_name, ttl=30, wait=0):
        pass


async def test_names_are_independent(io_loop, locks, lock_name):
    async with locks.lock(lock_name, ttl=30):
        async with locks.lock(lock_name + "-other", ttl=30, wait=0):
            pass


async def test_memory_frees_its_entries(io_loop, lock_name):
    locks = MemoryLocks()
    async with locks.lock(lock_name, ttl=30):
        assert len(locks) == 1
        with pytest.raises(LockTimeout):
            async with locks.lock(lock_name, ttl=30, wait=0):
                pass
        with pytest.raises(LockTimeout):
            async with locks.lock(lock_name, ttl=30, wait=0.01):
                pass
        assert len(locks) == 1
    assert len(locks) == 0


# -- Redis only ----------------------------------------------------------------

async def test_redis_uses_prefixed_key_and_deletes_it(io_loop, redis_locks, redis_client,
                                                      lock_name):
    key = KEY_PREFIX + lock_name
    async with redis_locks.lock(lock_name, ttl=30):
        assert await redis_client.exists(key) == 1
        assert 0 < await redis_client.pttl(key) <= 30_000  # always an expiry
    assert await redis_client.exists(key) == 0


async def test_redis_watchdog_keeps_lock_past_ttl(io_loop, redis_locks, redis_client, lock_name):
    key = KEY_PREFIX + lock_name
    async with redis_locks.lock(lock_name, ttl=1):
        token = await redis_client.get(key)
        extensions = 0
        previous = await redis_client.pttl(key)
        # Four resets at ttl/3 each take the holder past its 1 s ttl. Poll
        # the key's remaining time until then (bounded: ~10 s at most).
        for _ in range(400):
            if extensions >= 4:
                break
            await asyncio.sleep(0.025)
            remaining = await redis_client.pttl(key)
            assert remaining > 0, "the lock expired while held"
            if remaining > previous:
                extensions += 1
            previous = remaining
        assert extensions >= 4
        assert await redis_client.get(key) == token  # still ours
        with pytest.raises(LockTimeout):
            async with redis_locks.lock(lock_name, ttl=1, wait=0):
                pytest.fail("acquired a held lock")
    assert await redis_client.exists(key) == 0


async def test_redis_lost_lock_never_releases_new_owner(io_loop, redis_locks, redis_client,
                                                        lock_name, caplog):
    key = KEY_PREFIX + lock_name
    first = redis_locks.lock(lock_name, ttl=30)
    await first.__aenter__()
    await redis_client.delete(key)  # as if it expired while its holder was paused

    second = redis_locks.lock(lock_name, ttl=30, wait=0)
    await second.__aenter__()
    new_token = await redis_client.get(key)
    assert new_token

    with caplog.at_level(logging.WARNING, logger="uploader.locks.redis"):
        await first.__aexit__(None, None, None)  # logged, not raised
    assert any("expired before release" in r.getMessage() for r in caplog.records)
    assert await redis_client.get(key) == new_token  # the new owner's key is intact
    with pytest.raises(LockTimeout):
        async with redis_locks.lock(lock_name, ttl=30, wait=0):
            pass

    await second.__aexit__(None, None, None)
    assert await redis_client.exists(key) == 0


async def test_redis_watchdog_stops_when_lock_lost(io_loop, redis_locks, redis_client,
                                                   lock_name, caplog):
    key = KEY_PREFIX + lock_name
    with caplog.at_level(logging.WARNING, logger="uploader.locks.redis"):
        async with redis_locks.lock(lock_name, ttl=0.3):
            await redis_client.set(key, b"someone-else", px=30_000)
            # Poll (bounded) until the watchdog's next tick notices the loss.
            for _ in range(400):
                if any("lost while held" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
            assert any("lost while held" in r.getMessage() for r in caplog.records)
            # It did not overwrite the other owner's ttl or value.
            assert await redis_client.get(key) == b"someone-else"
            assert await redis_client.pttl(key) > 1000
    assert await redis_client.get(key) == b"someone-else"
    await redis_client.delete(key)


async def test_redis_unreachable_is_unavailable(io_loop):
    locks = RedisLocks("redis://127.0.0.1:1/0", socket_timeout=2)
    try:
        with pytest.raises(Unavailable) as info:
            async with locks.lock("anything", ttl=5, wait=0):
                pytest.fail("acquired without Redis")
        assert info.value.retry_after == 2 and info.value.status == 503
        assert await locks.ping() is False
    finally:
        await locks.close()


async def test_redis_ping(io_loop, redis_locks):
    assert await redis_locks.ping() is True


async def test_redis_body_errors_are_not_translated(io_loop, redis_locks, lock_name):
    # Only acquisition failures become Unavailable; the body's own errors pass.
    with pytest.raises(KeyError):
        async with redis_locks.lock(lock_name, ttl=30):
            raise KeyError("from the body")
