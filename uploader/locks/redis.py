"""Locks shared by every instance, through Redis (docs/architecture.md: locks and fencing).

Each acquisition gets its own ``redis.asyncio.lock.Lock`` (token + compare-
and-delete in Lua), always with a TTL so a crashed holder cannot block others
forever, and a watchdog task that resets the TTL every ttl/3 while the body
runs. A holder that loses its lock anyway (paused past the TTL, Redis
restarted) only logs it: correctness comes from the ``merge_version`` fence
in the metadata store, not from the lock.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager, suppress
from typing import AsyncIterator

import redis.asyncio
import redis.exceptions
from redis.asyncio.lock import Lock

from ..errors import Unavailable
from .base import NO_TOKEN, LockHandle, LockTimeout

log = logging.getLogger(__name__)

KEY_PREFIX = "uploader:lock:"
# How often a blocked acquirer polls Redis (redis-py's Lock polls; it does not
# subscribe to releases).
POLL_INTERVAL = 0.05
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class RedisLocks:
    def __init__(self, url: str, *, socket_timeout: float = 5.0,
                 key_prefix: str = KEY_PREFIX) -> None:
        # Deployments (or test runs) sharing one Redis keep apart by prefix.
        self.key_prefix = key_prefix
        # Timeouts on connect and on each command: an unreachable Redis must
        # surface as Unavailable, not as a request hanging forever.
        self._client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=socket_timeout, socket_timeout=socket_timeout)

    @property
    def client(self) -> redis.asyncio.Redis:
        return self._client

    @asynccontextmanager
    async def lock(self, name: str, *, ttl: float,
                   wait: float | None = None) -> AsyncIterator[LockHandle]:
        if ttl <= 0:
            raise ValueError("ttl must be > 0: a lock without expiry outlives a crashed holder")
        # A fresh Lock per acquisition: a Lock object carries its token, and
        # sharing one between tasks lets one task release another's lock.
        # thread_local=False: every task runs in the same thread, so a
        # thread-local token would be shared between them anyway.
        lock = Lock(self._client, self.key_prefix + name, timeout=ttl, sleep=POLL_INTERVAL,
                    blocking=wait is None or wait > 0,
                    blocking_timeout=wait if wait else None, thread_local=False)
        try:
            acquired = await lock.acquire()
        except _REDIS_DOWN as exc:
            raise Unavailable("lock service unavailable") from exc
        if not acquired:
            raise LockTimeout(name)
        watchdog = asyncio.ensure_future(self._watchdog(lock, name, ttl))
        try:
            yield NO_TOKEN
        finally:
            watchdog.cancel()
            with suppress(asyncio.CancelledError):
                await watchdog
            await self._release(lock, name)

    async def _watchdog(self, lock: Lock, name: str, ttl: float) -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                # Reset the TTL to the full ttl (not add to it): a holder
                # that dies leaves at most ttl behind.
                await lock.reacquire()
            except redis.exceptions.LockNotOwnedError:
                log.warning("lock %r was lost while held (expired or taken over); "
                            "the merge_version fence protects the result", name)
                return
            except _REDIS_DOWN as exc:
                # Transient: try again next tick; the lock may expire meanwhile.
                log.warning("could not extend lock %r: %s", name, exc)

    async def _release(self, lock: Lock, name: str) -> None:
        # Release problems are logged, not raised: the body's work is done
        # (or failed on its own), and an unreleased lock expires by its TTL.
        try:
            await lock.release()
        except redis.exceptions.LockNotOwnedError:
            log.warning("lock %r expired before release; another holder may have run", name)
        except _REDIS_DOWN as exc:
            log.warning("could not release lock %r (expires by its ttl): %s", name, exc)

    async def ping(self) -> bool:
        """True when Redis answers (for readiness checks)."""
        try:
            return bool(await self._client.ping())
        except _REDIS_DOWN:
            return False

    async def close(self) -> None:
        await self._client.aclose()
