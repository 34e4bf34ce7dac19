"""The expiry sweep at scale: ``rows`` abandoned uploads bulk-inserted into the
database, then one sweep of a real server (``expiry.batch_size`` default),
timed by its own metric; and the latency of ``GET status`` on one connection
while that sweep runs, next to the same requests without a sweep.

The rows go straight into the database (INSERT of many rows per statement):
creating them through the API would take longer than the sweep. They have no
chunk files; the sweep's storage step still runs for each (a folder that is
not there).
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from .client import Conn
from .figures import Figure
from .server import ServerProcess, uploader_server

BATCH_ROWS = 5000  # rows per INSERT batch
# Seconds between looks at /metrics. A scrape counts uploads by status (a scan
# of the table before issue 21.1's counters, schema step 8): both phases scrape
# at this pace, so the latency comparison carries the same extra load on each side.
SCRAPE_EVERY = 1.0


def _rows(count: int, text_ts: bool) -> list[tuple[Any, ...]]:
    old: Any = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=30)
    if text_ts:
        old = old.strftime("%Y-%m-%d %H:%M:%S.%f")
    return [(uuid.uuid4().hex, "local", "abandoned.bin", 10, 1 << 20, 1, "in_progress", old, old)
            for _ in range(count)]


_INSERT = ("INSERT INTO uploads (upload_id, owner, filename, total_size, chunk_size, "
           "total_chunks, status, created_at, updated_at) VALUES ({m},{m},{m},{m},{m},{m},{m},{m},{m})")


def bulk_insert(data_dir: Path, mysql_dsn: str | None, count: int) -> float:
    """Insert ``count`` abandoned rows; the seconds it took."""
    started = time.monotonic()
    if mysql_dsn is None:
        import sqlite3
        with sqlite3.connect(data_dir / "uploader.db") as db:
            for start in range(0, count, BATCH_ROWS):
                db.executemany(_INSERT.format(m="?"), _rows(min(BATCH_ROWS, count - start), True))
        return time.monotonic() - started
    import pymysql

    from uploader.store.mysql import parse_dsn
    p = parse_dsn(mysql_dsn)
    conn = pymysql.connect(host=p["host"], port=p["port"], user=p["user"],
                           password=p["password"], database=p["db"], autocommit=False)
    try:
        with conn.cursor() as cur:
            for start in range(0, count, BATCH_ROWS):
                cur.executemany(_INSERT.format(m="%s"),
                                _rows(min(BATCH_ROWS, count - start), False))
                conn.commit()
    finally:
        conn.close()
    return time.monotonic() - started


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def _latencies(conn: Conn, path: str, until: Callable[[], bool],
                     most: int) -> list[float]:
    out: list[float] = []
    while not until() and len(out) < most:
        t0 = time.perf_counter()
        status, _ = await conn.request("GET", path)
        out.append(time.perf_counter() - t0)
        assert status == 200, status
    return out


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def sweep_figures(tmp: Path, mysql_dsn: str | None, redis_url: str | None, rows: int,
                        probes: int, log: Callable[[str], None],
                        extra_env: dict[str, str] | None = None) -> list[Figure]:
    backend = "mysql" if mysql_dsn else "sqlite"
    env = {"UPLOADER_STORAGE_FSYNC": "true", **(extra_env or {})}
    batch = int(env.get("UPLOADER_EXPIRY_BATCH_SIZE", 100))

    def server(extra: dict[str, str]) -> ServerProcess:
        return uploader_server(tmp, mysql_dsn=mysql_dsn, redis_url=redis_url,
                               extra_env={**env, **extra})
    first = await server({}).start()  # the schema, and one live upload to ask about
    try:
        conn = Conn("127.0.0.1", first.port)
        probe = (await conn.json("POST", "/upload/init", {"filename": "live.bin", "size": 10},
                                 expect=201))["upload_id"]
        await conn.close()
    finally:
        first.stop()
    insert_s = bulk_insert(tmp / "data", mysql_dsn, rows)
    log(f"sweep ({backend}): {rows:,} abandoned rows inserted in {insert_s:.1f}s")
    path = f"/upload/{probe}/status"

    quiet = await server({}).start()
    try:
        conn = Conn("127.0.0.1", quiet.port)
        await _latencies(conn, path, lambda: False, 20)  # warm
        stop = asyncio.Event()

        async def scrape() -> None:
            metrics = Conn("127.0.0.1", quiet.port)
            while not stop.is_set():
                await metrics.request("GET", "/metrics")
                await asyncio.sleep(SCRAPE_EVERY)
            await metrics.close()
        scraper = asyncio.ensure_future(scrape())
        idle = await _latencies(conn, path, lambda: False, probes)
        stop.set()
        await scraper
        await conn.close()
    finally:
        quiet.stop()

    sweeping = await server({"UPLOADER_EXPIRY_ENABLED": "true", "UPLOADER_EXPIRY_INTERVAL": "1",
                             "UPLOADER_EXPIRY_JITTER": "0"}).start()
    state: dict[str, Any] = {"running": False, "done": False, "seconds": None, "removed": 0}

    async def watch() -> None:
        # The server's own metrics say when its sweep runs and ends (a fast
        # sweep may start and end between two looks).
        metrics = Conn("127.0.0.1", sweeping.port)
        while not state["done"]:
            _, body = await metrics.request("GET", "/metrics")
            text = body.decode()
            running = _metric(text, "uploader_expiry_running") == 1
            removed = _metric(text, 'uploader_expiry_removed_total{kind="expired"}') or 0
            state["running"] = state["running"] or running or removed > 0
            if not running and removed >= rows:
                state["removed"] = removed
                state["done"] = True
            await asyncio.sleep(SCRAPE_EVERY)
        await metrics.close()
    try:
        watcher = asyncio.ensure_future(watch())
        conn = Conn("127.0.0.1", sweeping.port)
        while not state["running"] and not watcher.done():
            await conn.request("GET", path)
        during = await _latencies(conn, path, lambda: bool(state["done"]), 10 ** 9)
        await watcher
        await conn.close()
    finally:
        sweeping.stop()
    if not during:
        during = idle[:1]  # the sweep ended before a request got in between
    # The first sweep's own duration, from its log line (the timer sweeps
    # again every second, which resets the duration metric).
    found = re.search(r"expiry sweep: expired (\d+) uploads.* in ([0-9.]+)s",
                      (tmp / "server.log").read_text())
    assert found and int(found.group(1)) >= rows, "no sweep line in the server log"
    seconds = float(found.group(2))
    per_100k = seconds * 100_000 / rows
    log(f"sweep ({backend}): {int(state['removed']):,} removed in {seconds:.1f}s; "
        f"{len(during)} status requests meanwhile")
    med_idle, med_during = statistics.median(idle) * 1e3, statistics.median(during) * 1e3
    p99_idle, p99_during = _p99(idle) * 1e3, _p99(during) * 1e3
    label = f"{backend} {rows:,} rows" + (f", batch {batch}" if batch != 100 else "")
    return [
        Figure(f"sweep s per 100k abandoned ({label})", "s", per_100k,
               "bulk INSERT of them s per 100k", insert_s * 100_000 / rows,
               per_100k / (insert_s * 100_000 / rows),
               {"sweep_seconds": seconds, "rows": rows, "batch_size": batch}),
        Figure(f"sweep status latency median ({label})", "ms", med_during,
               "no sweep ms", med_idle, med_during / med_idle,
               {"requests_during": len(during), "requests_idle": len(idle)}),
        Figure(f"sweep status latency p99 ({label})", "ms", p99_during,
               "no sweep ms", p99_idle, p99_during / p99_idle),
    ]
