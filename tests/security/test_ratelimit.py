"""Token buckets per owner and per address on init and chunk calls."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest
import redis

from support import KiB, require_redis
from uploader import redis_keys
from uploader.config import load_config
from uploader.errors import UploadError
from uploader.ratelimit import Bucket, MemoryBuckets, RateLimiter, RedisBuckets
from uploader.runtime import make_locks

from .helpers import AUTH_ON, TokenApi

CS = 64 * KiB
REDIS_URL = os.environ.get("TEST_UPLOADER_REDIS_URL", "redis://127.0.0.1:6379/15")
# So slow that no token comes back during a test: the outcome never depends
# on timing.
SLOW = 0.001


@pytest.fixture
def redis_url() -> str:
    return require_redis(REDIS_URL)


class TestPerOwner:
    @pytest.fixture
    def config_overrides(self) -> dict[str, dict[str, Any]]:
        return {"auth": dict(AUTH_ON), "ratelimit": {"owner_rate": SLOW, "owner_burst": 3}}

    async def test_init_and_chunk_share_the_owner_bucket(self, alice: TokenApi, bob: TokenApi):
        up = await alice.init(2 * CS, CS)
        code, _ = await alice.put_chunk(up["upload_id"], 0, b"a" * CS)
        assert code == 200
        await alice.init(1, CS)
        # The fourth call of alice is refused, before its body is read.
        resp = await alice.call("PUT", f"/upload/{up['upload_id']}/chunk?index=1",
                                raw=b"b" * CS)
        assert resp.code == 429 and b'"code":"rate_limited"' in resp.body
        assert int(resp.headers["Retry-After"]) >= 1
        resp = await alice.call("POST", "/upload/init", {"filename": "f", "size": 1})
        assert resp.code == 429
        # Reads are not limited, and bob has a bucket of his own.
        assert (await alice.status(up["upload_id"]))["received"] == [0]
        await bob.init(1, CS)


class TestPerAddress:
    @pytest.fixture
    def config_overrides(self) -> dict[str, dict[str, Any]]:
        return {"auth": dict(AUTH_ON), "ratelimit": {"address_rate": SLOW, "address_burst": 2}}

    async def test_owners_on_one_address_share_its_bucket(self, alice: TokenApi, bob: TokenApi):
        await alice.init(1, CS)
        await bob.init(1, CS)
        code, doc = await alice.json("POST", "/upload/init", {"filename": "f", "size": 1})
        assert code == 429 and doc["error"]["code"] == "rate_limited"
        code, _ = await bob.json("POST", "/upload/init", {"filename": "f", "size": 1})
        assert code == 429


async def test_off_by_default(api):
    for _ in range(50):
        await api.init(1, CS)


def limiter(backend: str, url: str = "redis://unused") -> RateLimiter:
    config = load_config(None, env={}, overrides={
        "locks": {"backend": backend, "redis_url": url},
        "ratelimit": {"owner_rate": SLOW, "owner_burst": 5}})
    return RateLimiter(config)


async def test_redis_buckets_hold_across_instances_atomically(io_loop, redis_url):
    # Two limiters stand for two server instances sharing Redis.
    first, second = limiter("redis", redis_url), limiter("redis", redis_url)
    assert isinstance(first.buckets, RedisBuckets)
    owner = f"owner-{uuid.uuid4().hex}"
    try:
        results = await asyncio.gather(
            *((first if i % 2 else second).check(owner, "addr") for i in range(20)),
            return_exceptions=True)
        granted = [r for r in results if r is None]
        refused = [r for r in results if r is not None]
        assert len(granted) == 5 and len(refused) == 15
        assert all(getattr(r, "code", None) == "rate_limited" and r.retry_after >= 1
                   for r in refused)
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_bucket_refills(io_loop, backend, request):
    if backend == "redis":
        buckets: Any = RedisBuckets(request.getfixturevalue("redis_url"))
    else:
        buckets = MemoryBuckets()
    bucket = Bucket(rate=20.0, burst=1)
    key = f"refill-{uuid.uuid4().hex}"
    try:
        assert await buckets.take(key, bucket) == 0.0
        wait = await buckets.take(key, bucket)
        # Refused (unless the machine stalled for a refill period), then a
        # token comes back: poll, bounded, instead of sleeping a guessed time.
        for _ in range(500):
            if await buckets.take(key, bucket) == 0.0:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("no token came back within 5 s")
        assert 0.0 <= wait <= 1 / bucket.rate
    finally:
        await buckets.close()


async def test_redis_down_is_503(io_loop):
    # A port nothing listens on: the limiter reports unavailable, not a crash.
    bad = limiter("redis", "redis://127.0.0.1:1/0")
    try:
        with pytest.raises(Exception) as info:
            await bad.check("x", "y")
        assert getattr(info.value, "code", None) == "unavailable"
    finally:
        await bad.close()


async def test_memory_buckets_forget_refilled_keys(io_loop, monkeypatch):
    import uploader.ratelimit as rl
    monkeypatch.setattr(rl, "MAX_MEMORY_KEYS", 10)
    buckets = MemoryBuckets()
    fast, slow = Bucket(rate=1e9, burst=1), Bucket(rate=SLOW, burst=1)
    assert await buckets.take("slow", slow) == 0.0
    for i in range(20):
        await buckets.take(f"fast-{i}", fast)
    # Refilled buckets were dropped; the empty slow one was kept (no reset).
    assert len(buckets._state) <= 11
    assert await buckets.take("slow", slow) > 0


def deployment(url: str, prefix: str) -> Any:
    return load_config(None, env={}, overrides={
        "locks": {"backend": "redis", "redis_url": url, "redis_prefix": prefix},
        "ratelimit": {"owner_rate": SLOW, "owner_burst": 1}})


async def test_one_prefix_for_every_redis_key(io_loop, redis_url):
    """Issue 13.11: locks.redis_prefix covers rate-limit buckets as well as
    locks, so two deployments sharing one Redis share no budget (the buckets
    used to live under a fixed "uploader:rl:")."""
    run = uuid.uuid4().hex
    a, b = f"deploy-a-{run}:", f"deploy-b-{run}:"
    first, second = RateLimiter(deployment(redis_url, a)), RateLimiter(deployment(redis_url, b))
    client = redis.Redis.from_url(redis_url)
    try:
        await first.check("alice", "addr")
        await second.check("alice", "addr")  # its own budget: granted too
        with pytest.raises(UploadError) as refused:
            await first.check("alice", "addr")
        assert refused.value.code == "rate_limited"
        assert client.keys(f"{a}*") == [f"{a}rl:owner:alice".encode()]
        assert client.keys(f"{b}*") == [f"{b}rl:owner:alice".encode()]
        # Locks as the server wires them, under the same prefix.
        locks = make_locks(deployment(redis_url, a))
        try:
            async with locks.lock("merge:x", ttl=5):
                assert client.exists(f"{a}lock:merge:x")
        finally:
            await locks.close()
    finally:
        await first.close()
        await second.close()
        client.close()


def test_a_lock_prefix_of_the_old_form_keeps_its_keys():
    """Before issue 13 the setting prefixed lock keys only ("uploader:lock:"
    by default): such a configuration keeps the very same lock keys, and its
    rate limits move under the same namespace."""
    old = load_config(None, env={}, overrides={"locks": {"redis_prefix": "tenant:lock:"}}).locks
    assert redis_keys.key_prefix(old, redis_keys.LOCKS) == "tenant:lock:"
    assert redis_keys.key_prefix(old, redis_keys.RATE_LIMITS) == "tenant:rl:"
    default = load_config(None, env={}).locks
    assert redis_keys.key_prefix(default, redis_keys.LOCKS) == "uploader:lock:"
    assert redis_keys.key_prefix(default, redis_keys.RATE_LIMITS) == "uploader:rl:"
