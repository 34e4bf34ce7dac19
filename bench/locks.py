"""The ``locks`` figures: acquire+release latency of every lock backend, in
one run, each next to one round trip to the same service.

For each backend, ``pairs`` acquisitions and releases of one name in a row
(after a warm-up of 20), each timed from before ``lock()`` to after its
``async with`` exits; median and p99. The reference is ``ping()`` on the
same instance, timed the same way: one round trip through the same client
(Redis PING, MySQL SELECT 1 on a pooled connection, etcd GET /health), so
the ratio reads as "round trips per acquire+release". A backend whose
service does not answer is reported as skipped.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from typing import Awaitable, Callable

from uploader.locks.base import Locks

from .figures import Figure

REDIS_URL = os.environ.get("BENCH_UPLOADER_REDIS_URL", "redis://127.0.0.1:6379/14")
MYSQL_DSN = os.environ.get("BENCH_UPLOADER_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")
ETCD_URL = os.environ.get("BENCH_UPLOADER_ETCD_URL", "http://127.0.0.1:2379")
BACKENDS = ("memory", "redis", "mysql", "etcd")
WARMUP = 20


def build(kind: str, prefix: str) -> Locks:
    if kind == "redis":
        from uploader.locks.redis import RedisLocks
        return RedisLocks(REDIS_URL, key_prefix=prefix.replace("/", ":"))
    if kind == "mysql":
        from uploader.locks.mysql import MySQLLocks
        return MySQLLocks(MYSQL_DSN, ttl=30)
    if kind == "etcd":
        from uploader.locks.etcd import EtcdLocks
        return EtcdLocks(ETCD_URL, key_prefix=prefix)
    from uploader.locks.memory import MemoryLocks
    return MemoryLocks()


async def _timed(count: int, step: Callable[[], Awaitable[object]]) -> list[float]:
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        await step()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


async def lock_figures(pairs: int, log: Callable[[str], None]) -> list[Figure]:
    figures: list[Figure] = []
    prefix = f"uploader-bench/{uuid.uuid4().hex}/"
    for kind in BACKENDS:
        locks = build(kind, prefix)
        name = f"bench-{kind}"

        async def pair() -> None:
            async with locks.lock(name, ttl=30, wait=10):
                pass

        try:
            if not await locks.ping():
                log(f"locks: {kind} unreachable, skipped")
                for stat in ("median", "p99"):
                    figures.append(Figure(f"locks {kind} acquire+release {stat}", "ms", None,
                                          f"ping {stat} ms", None,
                                          note=f"skipped ({kind} unreachable)"))
                continue
            await _timed(WARMUP, pair)
            held = await _timed(pairs, pair)
            pings = await _timed(pairs, locks.ping)
        finally:
            await locks.close()
        log(f"locks: {kind} {pairs} pairs, median {statistics.median(held):.3f} ms")
        for stat, measure in (("median", statistics.median), ("p99", _p99)):
            value, ref = measure(held), measure(pings)
            figures.append(Figure(f"locks {kind} acquire+release {stat}", "ms", value,
                                  f"ping {stat} ms", ref, value / ref if ref else None,
                                  {"pairs": pairs}))
    return figures
