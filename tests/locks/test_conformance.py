"""One conformance suite for every Locks backend: memory, redis, mysql, etcd.

``locks`` and ``peer`` are two instances on one service, as two server
processes would be. The faults are real: a holder in another process killed
or frozen (SIGKILL, SIGSTOP), a holder's lock taken away on the service (key
deleted, session killed, lease revoked), the service cut away behind a TCP
relay. Memory locks live in one process: they have none of these faults,
so those tests run on the shared backends only (``shared_harness``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import pytest

from support import TcpProxy
from uploader.errors import Unavailable
from uploader.locks.base import LockHandle, Locks, LockTimeout
from uploader.locks.memory import MemoryLocks

from .helpers import Harness

# Locks held by a process that crashed or froze must free within this bound
# (the ttls below are 2 s; etcd's shortest lease is about 2 s).
FREE_BOUND = 30.0
TTL = 2.0


async def held_elsewhere(locks: Locks, name: str) -> bool:
    """True when a try-once acquisition fails (someone else holds it)."""
    try:
        async with locks.lock(name, ttl=30, wait=0):
            return False
    except LockTimeout:
        return True


async def test_mutual_exclusion(io_loop, harness: Harness, locks, peer, lock_name):
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
        async with peer.lock(lock_name, ttl=30, wait=30):
            events.append("b in")

    tasks = [asyncio.ensure_future(holder()), asyncio.ensure_future(waiter())]
    await b_started.wait()
    # While a holds it, nobody else gets it (b is trying meanwhile); the
    # intruder is a third instance.
    intruder = harness.make()
    with pytest.raises(LockTimeout):
        async with intruder.lock(lock_name, ttl=30, wait=0):
            events.append("intruder in")
    assert events == ["a in"]
    a_may_leave.set()
    await asyncio.gather(*tasks)
    assert events == ["a in", "a out", "b in"]


async def test_many_tasks_take_turns(io_loop, locks, peer, lock_name):
    inside = 0
    seen: list[int] = []

    async def worker(instance: Locks) -> None:
        nonlocal inside
        async with instance.lock(lock_name, ttl=30, wait=30):
            inside += 1
            seen.append(inside)
            await asyncio.sleep(0)  # let the others run while we hold it
            inside -= 1

    await asyncio.gather(*(worker((locks, peer)[i % 2]) for i in range(12)))
    assert seen == [1] * 12


async def test_wait_zero_fails_while_held(io_loop, locks, peer, lock_name):
    async with locks.lock(lock_name, ttl=30):
        for instance in (locks, peer):
            with pytest.raises(LockTimeout):
                async with instance.lock(lock_name, ttl=30, wait=0):
                    pytest.fail("acquired a held lock")


async def test_wait_n_times_out(io_loop, locks, peer, lock_name):
    async with locks.lock(lock_name, ttl=30):
        with pytest.raises(LockTimeout):
            async with peer.lock(lock_name, ttl=30, wait=0.3):
                pytest.fail("acquired a held lock")
    # Giving up left nothing queued behind: it is free at once.
    async with peer.lock(lock_name, ttl=30, wait=0):
        pass


async def test_waiter_gets_it_when_released(io_loop, locks, peer, lock_name):
    inside = asyncio.Event()
    events: list[str] = []

    async def holder() -> None:
        async with locks.lock(lock_name, ttl=30):
            inside.set()
            await asyncio.sleep(0.2)  # the waiter is queued meanwhile
            events.append("a out")

    task = asyncio.ensure_future(holder())
    await inside.wait()
    async with peer.lock(lock_name, ttl=30, wait=30):
        assert events == ["a out"]
    await task


async def test_release_frees(io_loop, locks, peer, lock_name):
    async with locks.lock(lock_name, ttl=30):
        pass
    async with peer.lock(lock_name, ttl=30, wait=0):
        pass
    # Also after the body raised, and the body's error passes unchanged.
    with pytest.raises(KeyError):
        async with locks.lock(lock_name, ttl=30):
            raise KeyError("from the body")
    async with peer.lock(lock_name, ttl=30, wait=0):
        pass


async def test_cancelled_holder_frees(io_loop, locks, peer, lock_name):
    inside = asyncio.Event()

    async def holder() -> None:
        async with locks.lock(lock_name, ttl=30):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(holder())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with peer.lock(lock_name, ttl=30, wait=10):
        pass


async def test_names_are_independent(io_loop, locks, peer, lock_name):
    async with locks.lock(lock_name, ttl=30):
        async with peer.lock(lock_name + "-other", ttl=30, wait=0):
            pass
        async with peer.lock(lock_name + "/sub", ttl=30, wait=0):
            pass
    # A name that extends another with "/" is not held under it (etcd keys).
    async with locks.lock(lock_name + "/sub", ttl=30):
        async with peer.lock(lock_name, ttl=30, wait=0):
            pass


async def test_handle_and_token(io_loop, locks, peer, lock_name):
    """The body gets a LockHandle; a backend with a fencing token gives one
    that grows with every acquisition of the name, on any instance."""
    tokens = []
    for instance in (locks, peer, locks, peer):
        async with instance.lock(lock_name, ttl=30) as held:
            assert isinstance(held, LockHandle)
            tokens.append(held.token)
    if tokens[0] is None:
        assert tokens == [None] * 4
    else:
        assert tokens == sorted(set(tokens)), tokens
    # Without "as" it works just the same.
    async with locks.lock(lock_name, ttl=30):
        pass


async def test_live_holder_keeps_lock_past_ttl(io_loop, shared_harness: Harness, lock_name):
    """The keep-alive renews it: held past its ttl, never taken (memory
    locks have no ttl to outlive)."""
    locks, peer = shared_harness.make(), shared_harness.make()
    async with locks.lock(lock_name, ttl=TTL):
        until = time.monotonic() + 1.6 * TTL
        checks = 0
        while time.monotonic() < until:
            assert await held_elsewhere(peer, lock_name)
            checks += 1
            await asyncio.sleep(0.25)  # time passing is the point here
        assert checks >= 5
    assert not await held_elsewhere(peer, lock_name)


async def _start_holder(harness: Harness, name: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *harness.holder_argv(name, TTL), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), FREE_BOUND)
    except asyncio.TimeoutError:
        proc.kill()
        raise
    if not line.startswith(b"held"):
        proc.kill()
        raise AssertionError(f"the holder did not take the lock: "
                             f"{(await proc.stderr.read()).decode()[-2000:]}")
    return proc


async def _frees_within_bound(peer: Locks, name: str) -> float:
    started = time.monotonic()
    async with peer.lock(name, ttl=30, wait=FREE_BOUND):
        pass
    return time.monotonic() - started


@pytest.mark.parametrize("crash", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
async def test_crashed_holder_frees(io_loop, shared_harness: Harness, lock_name, crash):
    """A holder process killed (sockets closed) or frozen (sockets open,
    keep-alive stopped): its lock frees by itself, by its ttl at most."""
    harness, peer = shared_harness, shared_harness.make()
    proc = await _start_holder(harness, lock_name)
    try:
        assert await held_elsewhere(peer, lock_name)
        proc.send_signal(crash)
        freed_after = await _frees_within_bound(peer, lock_name)
        print(f"\n[{harness.kind}] holder {crash.name}: lock free after {freed_after:.2f}s "
              f"(ttl {TTL}s)")
    finally:
        if proc.returncode is None:
            proc.kill()  # also ends a stopped one
        await proc.wait()


async def test_lost_lock_release_spares_new_owner(io_loop, shared_harness: Harness, lock_name,
                                                 caplog):
    """A holder whose lock was taken away (expired while it was paused)
    releases only its own: the new owner keeps the lock."""
    harness = shared_harness
    locks, peer = harness.make(), harness.make()
    first = locks.lock(lock_name, ttl=30)
    await first.__aenter__()
    await harness.take_away(lock_name)

    second = peer.lock(lock_name, ttl=30, wait=10)
    await second.__aenter__()
    with caplog.at_level(logging.WARNING, logger="uploader.locks"):
        await first.__aexit__(None, None, None)  # logged, not raised
    assert any(r.levelno == logging.WARNING and lock_name in r.getMessage()
               for r in caplog.records), caplog.text
    assert await held_elsewhere(harness.make(), lock_name)  # the new owner's is intact
    await second.__aexit__(None, None, None)
    assert not await held_elsewhere(harness.make(), lock_name)


async def test_outage_is_unavailable_and_heals(io_loop, shared_harness: Harness, lock_name):
    """The service cut away: acquisition raises Unavailable (503 with
    Retry-After), ping answers False; back again: it works, no restart."""
    harness = shared_harness
    proxy = TcpProxy(*harness.address)
    await proxy.start()
    try:
        locks = harness.make_at("127.0.0.1", proxy.port)
        async with locks.lock(lock_name, ttl=30, wait=0):
            pass
        assert await locks.ping() is True
        await proxy.stop()
        with pytest.raises(Unavailable) as info:
            async with locks.lock(lock_name, ttl=30, wait=0):
                pytest.fail("acquired without the service")
        assert info.value.status == 503 and info.value.retry_after == 2
        with pytest.raises(Unavailable):
            async with locks.lock(lock_name, ttl=30, wait=5):
                pytest.fail("acquired without the service")
        assert await locks.ping() is False
        await proxy.start()
        async with locks.lock(lock_name, ttl=30, wait=0):
            pass
        assert await locks.ping() is True
    finally:
        await proxy.stop()


async def test_unreachable_is_unavailable(io_loop, shared_harness: Harness, lock_name):
    locks = shared_harness.make_at("127.0.0.1", 1)  # nobody listens on port 1
    with pytest.raises(Unavailable) as info:
        async with locks.lock(lock_name, ttl=5, wait=0):
            pytest.fail("acquired without the service")
    assert info.value.status == 503 and info.value.retry_after == 2
    assert await locks.ping() is False


async def test_ping(io_loop, locks):
    assert await locks.ping() is True


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
