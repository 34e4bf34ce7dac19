"""Token buckets per owner and per client address on init and chunk calls.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second;
each call takes one token or is refused with the seconds until one is back
(sent as ``Retry-After``). In memory for one instance; in Redis (one Lua
script, so the read-refill-take is atomic) when ``locks.backend: redis``,
so several instances behind a load balancer share one budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

from . import redis_keys
from .config import Config
from .errors import Unavailable, UploadError

# Memory buckets idle long enough to be full again are dropped past this
# many keys, so a flood of distinct addresses cannot grow memory unbounded.
MAX_MEMORY_KEYS = 100_000


@dataclass(frozen=True)
class Bucket:
    rate: float
    burst: int

    @property
    def on(self) -> bool:
        return self.rate > 0


class Buckets(Protocol):
    async def take(self, key: str, bucket: Bucket) -> float:
        """Take one token; 0.0 when granted, else seconds until one is back."""

    async def close(self) -> None:
        ...


class MemoryBuckets:
    def __init__(self) -> None:
        # key -> (tokens, last update, when the bucket is full again)
        self._state: dict[str, tuple[float, float, float]] = {}
        self._now = time.monotonic

    async def take(self, key: str, bucket: Bucket) -> float:
        now = self._now()
        tokens, at, _ = self._state.get(key, (float(bucket.burst), now, now))
        tokens = min(float(bucket.burst), tokens + (now - at) * bucket.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / bucket.rate
        self._state[key] = (tokens, now, now + (bucket.burst - tokens) / bucket.rate)
        if len(self._state) > MAX_MEMORY_KEYS:
            self._prune(now)
        return wait

    def _prune(self, now: float) -> None:
        # A bucket that has refilled is the same as one never used.
        for key in [k for k, (_, _, full_at) in self._state.items() if full_at <= now]:
            del self._state[key]

    async def close(self) -> None:
        pass


# KEYS[1] bucket; ARGV rate, burst. Redis's own clock, so instances with
# skewed clocks agree. Returns the wait as a string (Lua numbers returned to
# the client are truncated to integers).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisBuckets:
    def __init__(self, url: str, prefix: str = "uploader:rl:") -> None:
        import redis.asyncio as aioredis
        self._redis = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._script = self._redis.register_script(_TAKE)
        self._prefix = prefix

    async def take(self, key: str, bucket: Bucket) -> float:
        import redis.exceptions
        try:
            wait = await self._script(keys=[self._prefix + key],
                                      args=[bucket.rate, bucket.burst])
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise Unavailable("rate limiter unavailable") from exc
        return float(wait)

    async def close(self) -> None:
        await self._redis.aclose()


class RateLimiter:
    """The two buckets a request passes: its owner's and its address's."""

    def __init__(self, config: Config, buckets: Buckets | None = None) -> None:
        rl = config.ratelimit
        self.owner_bucket = Bucket(rl.owner_rate, rl.owner_burst)
        self.address_bucket = Bucket(rl.address_rate, rl.address_burst)
        self.enabled = self.owner_bucket.on or self.address_bucket.on
        if buckets is None:
            if self.enabled and config.locks.backend == "redis":
                buckets = RedisBuckets(config.locks.redis_url, prefix=redis_keys.key_prefix(
                    config.locks, redis_keys.RATE_LIMITS))
            else:
                buckets = MemoryBuckets()
        self.buckets = buckets

    async def check(self, owner: str, address: str) -> None:
        """Take a token from each enabled bucket, or raise 429."""
        for key, bucket in ((f"owner:{owner}", self.owner_bucket),
                            (f"addr:{address}", self.address_bucket)):
            if not bucket.on:
                continue
            wait = await self.buckets.take(key, bucket)
            if wait > 0:
                raise UploadError("rate_limited", "too many requests, slow down",
                                  retry_after=max(1, math.ceil(wait)))

    async def close(self) -> None:
        await self.buckets.close()
