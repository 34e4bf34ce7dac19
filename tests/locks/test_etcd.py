"""etcd only: keys and leases, the revision as token, server-side waiting,
endpoint failover, a revoked lease (the shared behaviour is in
test_conformance.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from uploader.locks.base import LockTimeout
from uploader.locks.etcd import EtcdLocks, etcd_lock_key
from uploader.locks.etcd_gateway import unb64

from .helpers import ETCD_URL, EtcdHarness, logged

pytestmark = pytest.mark.etcd


def lock_keys(harness: EtcdHarness, name: str) -> list[dict]:
    return harness.keys(etcd_lock_key("", name) + "/")


async def wait_for_keys(harness: EtcdHarness, name: str, count: int) -> list[dict]:
    for _ in range(500):  # bounded poll
        keys = lock_keys(harness, name)
        if len(keys) == count:
            return keys
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} keys under {name}, got {lock_keys(harness, name)}")


@pytest.mark.parametrize("wait", [0, 30], ids=["try-once", "blocking"])
async def test_key_lease_and_token(io_loop, etcd_harness: EtcdHarness, lock_name, wait):
    locks = etcd_harness.make()
    async with locks.lock(lock_name, ttl=7, wait=wait) as held:
        [kv] = lock_keys(etcd_harness, lock_name)
        lease = int(kv["lease"])
        # <prefix><name>/<lease in hex>, bound to the lease.
        assert unb64(kv["key"]) == f"{etcd_harness.prefix}{lock_name}/{lease:x}"
        # Uncontended, the token is the revision that created our key.
        assert held.token == int(kv["create_revision"])
        ttl = etcd_harness.call("/v3/lease/timetolive", {"ID": str(lease)})
        assert int(ttl["grantedTTL"]) == 7
    assert lock_keys(etcd_harness, lock_name) == []
    gone = etcd_harness.call("/v3/lease/timetolive", {"ID": str(lease)})
    assert int(gone.get("TTL", -1)) == -1  # revoked with the release


async def test_waiters_queue_on_the_server(io_loop, etcd_harness: EtcdHarness, lock_name):
    holder, waiter = etcd_harness.make(), etcd_harness.make()
    first = holder.lock(lock_name, ttl=30)
    held = await first.__aenter__()
    task = asyncio.ensure_future(waiter.lock(lock_name, ttl=30, wait=30).__aenter__())
    # The waiter's key is queued behind the holder's (no polling client-side).
    await wait_for_keys(etcd_harness, lock_name, 2)
    assert not task.done()
    await first.__aexit__(None, None, None)
    second = await task
    assert second.token > held.token
    await wait_for_keys(etcd_harness, lock_name, 1)


async def test_timed_out_waiter_leaves_no_key(io_loop, etcd_harness: EtcdHarness, lock_name):
    holder, waiter = etcd_harness.make(), etcd_harness.make()
    async with holder.lock(lock_name, ttl=30):
        with pytest.raises(LockTimeout):
            async with waiter.lock(lock_name, ttl=30, wait=0.3):
                pass
        await wait_for_keys(etcd_harness, lock_name, 1)  # the holder's only
        with pytest.raises(LockTimeout):
            async with waiter.lock(lock_name, ttl=30, wait=0):
                pass
        await wait_for_keys(etcd_harness, lock_name, 1)


async def test_a_dead_endpoint_is_skipped(io_loop, etcd_harness: EtcdHarness, lock_name):
    locks = EtcdLocks(["http://127.0.0.1:1", ETCD_URL], key_prefix=etcd_harness.prefix)
    try:
        assert await locks.ping() is True
        async with locks.lock(lock_name, ttl=30, wait=5) as held:
            assert held.token is not None
    finally:
        await locks.close()


async def test_revoked_lease_is_reported_lost(io_loop, etcd_harness: EtcdHarness, lock_name,
                                              caplog):
    locks = etcd_harness.make()
    with caplog.at_level(logging.WARNING, logger="uploader.locks.etcd"):
        async with locks.lock(lock_name, ttl=2):
            await etcd_harness.take_away(lock_name)
            await logged(caplog, "was lost while held")  # the keep-alive's next renewal
    assert "expired before release" in caplog.text
    async with locks.lock(lock_name, ttl=30, wait=0):
        pass
