"""A lock holder in a process of its own, for the crash tests: it takes the
lock, prints "held <token>", and keeps it (its keep-alive running) until it
is killed or stopped. It dies with the test process (PR_SET_PDEATHSIG).

    python holder.py redis|mysql|etcd URL PREFIX NAME TTL
"""

from __future__ import annotations

import asyncio
import ctypes
import signal
import sys

from uploader.locks.base import Locks


def build(kind: str, url: str, prefix: str, ttl: float) -> Locks:
    if kind == "redis":
        from uploader.locks.redis import RedisLocks
        return RedisLocks(url, key_prefix=prefix)
    if kind == "mysql":
        from uploader.locks.mysql import MySQLLocks
        return MySQLLocks(url, ttl=ttl, pool_size=1)
    from uploader.locks.etcd import EtcdLocks
    return EtcdLocks(url, key_prefix=prefix)


async def hold(kind: str, url: str, prefix: str, name: str, ttl: float) -> None:
    locks = build(kind, url, prefix, ttl)
    async with locks.lock(name, ttl=ttl, wait=30) as held:
        print(f"held {held.token}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    kind, url, prefix, name, ttl = sys.argv[1:6]
    asyncio.run(hold(kind, url, prefix, name, float(ttl)))
