"""Locks shared by every instance through etcd: leases, and the revision at
which a lock was granted as its fencing token.

Each acquisition grants its own lease (TTL = the lock's ttl; etcd raises it
to its minimum, about 2 s) and keeps it alive every ttl/3 while waiting and
while held. The lock is etcd's own (the v3 lock service, which
``etcdctl lock`` also uses): a key ``<prefix><name>/<lease id in hex>``
bound to the lease, and the holder is the oldest key under ``<prefix><name>/``.
Waiting happens server-side (a watch, not polling); a try-once acquisition
(``wait=0``) puts its key and reads the oldest in one transaction.

Release revokes the lease, which deletes the key. A holder that crashes or
freezes stops renewing, and etcd deletes its key when the lease expires.
Every failure path revokes the lease too, so nothing is left queued.

The token is the cluster revision at which the lock was granted: it grows
with every holder of a name, so a resource that keeps the highest token it
saw can refuse a stale holder (etcd's own fencing recipe).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from contextlib import asynccontextmanager, suppress
from typing import Any, AsyncIterator
from urllib.parse import quote

from ..errors import Unavailable
from .base import LockHandle, LockTimeout, deadline_of, remaining
from .etcd_gateway import NOT_FOUND, EtcdError, EtcdGateway, EtcdUnavailable, b64, prefix_end
from .memory import MemoryLocks

log = logging.getLogger(__name__)

KEY_PREFIX = "uploader/lock/"
# The HTTP timeout of a lock request that may wait forever (wait=None); the
# keep-alive notices a lost lease or an unreachable etcd long before.
LONGEST_WAIT = 86400.0
_FAILED = (EtcdUnavailable, EtcdError)


def etcd_lock_key(prefix: str, name: str) -> str:
    """The lock's name in etcd; holder and waiters are keys under it + "/".
    "/" in a name is escaped: "a" and "a/b" must not share a prefix."""
    return prefix + quote(name, safe=":")


class EtcdLocks:
    def __init__(self, endpoints: list[str] | str, *, key_prefix: str = KEY_PREFIX,
                 request_timeout: float = 5.0) -> None:
        if isinstance(endpoints, str):
            endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        self.key_prefix = key_prefix
        self._request_timeout = request_timeout
        self.gateway = EtcdGateway(endpoints, request_timeout=request_timeout)
        self._local = MemoryLocks()

    def key(self, name: str) -> str:
        return etcd_lock_key(self.key_prefix, name)

    @asynccontextmanager
    async def lock(self, name: str, *, ttl: float,
                   wait: float | None = None) -> AsyncIterator[LockHandle]:
        if ttl <= 0:
            raise ValueError("ttl must be > 0: a lock without expiry outlives a crashed holder")
        deadline = deadline_of(wait)
        # Tasks of this process queue here first: one lease and one waiting
        # request per name and process, however many tasks want it.
        async with self._local.lock(name, ttl=ttl, wait=wait):
            lease = await self._grant(ttl)
            keeper = asyncio.ensure_future(self._keep_alive(lease, name, ttl))
            try:
                token = await self._acquire(name, lease, deadline, keeper)
            except BaseException:
                await self._end(keeper)
                await self._revoke(lease, name, quiet=True)
                raise
            try:
                yield LockHandle(token)
            finally:
                await self._end(keeper)
                await self._revoke(lease, name, quiet=False)

    # -- acquisition -------------------------------------------------------

    async def _grant(self, ttl: float) -> int:
        try:
            doc = await self.gateway.call("/v3/lease/grant", {"TTL": max(1, math.ceil(ttl))})
        except _FAILED as exc:
            raise Unavailable("lock service unavailable") from exc
        return int(doc["ID"])

    async def _acquire(self, name: str, lease: int, deadline: float | None,
                       keeper: "asyncio.Future[bool]") -> int:
        key = self.key(name)
        left = remaining(deadline)
        if left == 0:
            return await self._try_once(name, key, lease)
        # One request per lease, never repeated: a lock request abandoned on
        # the server deletes its key, which a repeat with the same lease
        # would share (etcd 3.4 would then grant it without a key).
        request = asyncio.ensure_future(self.gateway.call(
            "/v3/lock/lock", {"name": b64(key), "lease": str(lease)},
            timeout=(left or LONGEST_WAIT) + self._request_timeout, waits=True))
        # The keep-alive ends only when the lease is lost: stop waiting then.
        either: set[asyncio.Future[Any]] = {request, keeper}
        done, _ = await asyncio.wait(either, timeout=left,
                                     return_when=asyncio.FIRST_COMPLETED)
        if request in done:
            try:
                doc = request.result()
            except _FAILED as exc:
                raise Unavailable("lock service unavailable") from exc
            return int(doc["header"]["revision"])
        # Abandoned: cancelling closes its connection, which ends the wait on
        # the server; the lease revoke that follows removes our key anyway.
        request.cancel()
        if keeper in done:
            raise Unavailable("lock service unavailable (lease lost while waiting)")
        raise LockTimeout(name)

    async def _try_once(self, name: str, key: str, lease: int) -> int:
        """Put our key and read the oldest under the name in one transaction:
        ours oldest means held (etcd's TryLock)."""
        prefix = key + "/"
        mine = f"{prefix}{lease:x}"
        try:
            doc = await self.gateway.call("/v3/kv/txn", {"success": [
                {"request_put": {"key": b64(mine), "value": "", "lease": str(lease)}},
                {"request_range": {"key": b64(prefix), "range_end": b64(prefix_end(prefix)),
                                   "sort_target": "CREATE", "sort_order": "ASCEND",
                                   "limit": "1"}},
            ]})
        except _FAILED as exc:
            raise Unavailable("lock service unavailable") from exc
        revision = int(doc["header"]["revision"])
        oldest = doc["responses"][1]["response_range"].get("kvs", [])
        if oldest and int(oldest[0]["create_revision"]) != revision:
            raise LockTimeout(name)  # our key goes with the lease
        return revision

    # -- holding and release -------------------------------------------------

    async def _keep_alive(self, lease: int, name: str, ttl: float) -> bool:
        """Renews every ttl/3; returns only when the lease is gone (False):
        etcd says so, or no renewal got through for a whole ttl."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                doc = await self.gateway.call("/v3/lease/keepalive", {"ID": str(lease)})
            except _FAILED as exc:
                if time.monotonic() - renewed < ttl:
                    # Transient: try again next tick.
                    log.warning("could not renew the lease of lock %r: %s", name, exc)
                    continue
                doc = {}
            if int(doc.get("result", {}).get("TTL", 0)) <= 0:
                log.warning("lock %r was lost while held (its lease expired); "
                            "the merge_version fence protects the result", name)
                return False
            renewed = time.monotonic()

    @staticmethod
    async def _end(keeper: "asyncio.Future[bool]") -> None:
        keeper.cancel()
        with suppress(asyncio.CancelledError):
            await keeper

    async def _revoke(self, lease: int, name: str, *, quiet: bool) -> None:
        # Shielded: a cancelled holder still frees its lock at once rather
        # than by the ttl. Problems are logged, never raised.
        try:
            await asyncio.shield(self.gateway.call("/v3/lease/revoke", {"ID": str(lease)}))
        except EtcdError as exc:
            if exc.code == NOT_FOUND and not quiet:
                log.warning("lock %r expired before release; another holder may have run",
                            name)
            elif exc.code != NOT_FOUND:
                log.warning("could not release lock %r (expires by its ttl): %s", name, exc)
        except EtcdUnavailable as exc:
            log.warning("could not release lock %r (expires by its ttl): %s", name, exc)

    async def ping(self) -> bool:
        return await self.gateway.healthy(self._request_timeout)

    async def close(self) -> None:
        await self.gateway.close()
        await self._local.close()
