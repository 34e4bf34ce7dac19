"""Token buckets per owner and per address on init and chunk calls."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest

from support import KiB, require_redis
from uploader.config import load_config
from uploader.ratelimit import Bucket, MemoryBuckets, RateLimiter, RedisBuckets

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
