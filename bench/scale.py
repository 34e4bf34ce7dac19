"""The ``scale`` section (issue 21): per-request costs with 0, 100,000 and
1,000,000 uploads already in the database, SQLite and MySQL, each as a ratio
to its own figure at 0; and the on-disk layout with that many entries in one
folder.

The uploads are bulk-inserted straight into the database (abandoned
``in_progress`` uploads with one chunk record each, spread over 1,000 owners,
one of them the bench's own owner), through the schema's own triggers so the
counters stay true. Every request figure is timed on one keep-alive
connection, requests back to back.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

from .client import Conn
from .figures import Figure
from .server import uploader_server

KiB = 1 << 10
OWNERS = 1000          # the bulk rows' owners; the bench's own is one of them
LOCAL_OWNER = "local"  # the owner of every request when auth is off (uploader/auth.py)
OPS = ("healthz", "init", "chunk PUT 64KiB", "status", "list page", "delete")


@dataclass
class ScaleRun:
    """One backend's server while uploads pile up in its database."""
    backend: str
    port: int
    pid: int
    data_dir: Path
    sqlite_path: Path | None
    mysql_dsn: str | None
    data: Path
    log: Callable[[str], None]


# Figures measured at each size after the per-request ones: fn(run, uploads)
# -> figures. The expiry sweep's time per 100,000 uploads (issue 21.4)
# belongs here.
AT_SIZE: list[Callable[[ScaleRun, int], Awaitable[list[Figure]]]] = []


def _owner(i: int) -> str:
    return LOCAL_OWNER if i % OWNERS == 0 else f"bulk{i % OWNERS}"


def _rows(start: int, stop: int) -> tuple[list[tuple], list[tuple]]:
    now = time.time()
    uploads, chunks = [], []
    for i in range(start, stop):
        uid = f"b{i:031x}"
        ts = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now - 86400 - i % 86400))
        # Small (2 KiB): the free-space reserve counts every active upload's
        # size; 1,000,000 of them must not fill the disk on paper.
        uploads.append((uid, _owner(i), "bulk.bin", 2048, 1024, 2, "in_progress",
                        ts + ".000000", ts + ".000000"))
        chunks.append((uid, 0, 1024, "0" * 32, ts + ".000000"))
    return uploads, chunks


UPLOAD_INSERT = ("INSERT INTO uploads (upload_id, owner, filename, total_size, chunk_size, "
                 "total_chunks, status, created_at, updated_at) VALUES ({m})")
CHUNK_INSERT = ("INSERT INTO upload_chunks (upload_id, chunk_index, size, md5, received_at) "
                "VALUES ({m})")


def bulk_insert(run: ScaleRun, start: int, stop: int, batch: int = 20_000) -> None:
    """Rows start..stop, in batches (the server keeps running: SQLite in WAL
    mode and InnoDB take a second writer)."""
    if run.sqlite_path is not None:
        db = sqlite3.connect(run.sqlite_path, timeout=60)
        try:
            for lo in range(start, stop, batch):
                ups, chs = _rows(lo, min(stop, lo + batch))
                with db:
                    db.executemany(UPLOAD_INSERT.format(m=",".join("?" * 9)), ups)
                    db.executemany(CHUNK_INSERT.format(m=",".join("?" * 5)), chs)
        finally:
            db.close()
        return
    import pymysql

    from uploader.store.dsn import parse_dsn
    assert run.mysql_dsn is not None
    conn = pymysql.connect(**parse_dsn(run.mysql_dsn), autocommit=False)
    try:
        with conn.cursor() as cur:
            for lo in range(start, stop, batch):
                ups, chs = _rows(lo, min(stop, lo + batch))
                cur.executemany(UPLOAD_INSERT.format(m=",".join(["%s"] * 9)), ups)
                cur.executemany(CHUNK_INSERT.format(m=",".join(["%s"] * 5)), chs)
                conn.commit()
    finally:
        conn.close()


async def _timed(calls: list[Callable[[], Awaitable[None]]]) -> float:
    """Milliseconds per call, calls back to back."""
    t0 = time.perf_counter()
    for call in calls:
        await call()
    return (time.perf_counter() - t0) * 1000 / max(1, len(calls))


async def request_costs(run: ScaleRun, per: int) -> dict[str, float]:
    """ms per request of each operation on one connection: ``per`` inits of a
    two-chunk 64 KiB-chunk upload, a chunk PUT into each, their status, list
    pages, their deletes."""
    conn = await Conn("127.0.0.1", run.port).open()
    ids: list[str] = []
    body = {"filename": "scale.bin", "size": 2 * 65536, "chunk_size": 65536}
    f = open(run.data, "rb")
    try:
        async def health() -> None:
            await conn.request("GET", "/healthz")

        async def init() -> None:
            ids.append((await conn.json("POST", "/upload/init", body, expect=201))["upload_id"])

        def put(uid: str, k: int) -> Callable[[], Awaitable[None]]:
            return lambda: conn.json("PUT", f"/upload/{uid}/chunk?index=0", file=f,
                                     offset=k * 65536, count=65536)

        def get(path: str, expect: int = 200) -> Callable[[], Awaitable[None]]:
            return lambda: conn.json("GET", path, expect=expect)

        def delete(uid: str) -> Callable[[], Awaitable[None]]:
            return lambda: conn.json("DELETE", f"/upload/{uid}", expect=204)

        costs = {"healthz": await _timed([health] * per), "init": await _timed([init] * per)}
        costs["chunk PUT 64KiB"] = await _timed([put(u, k) for k, u in enumerate(ids)])
        costs["status"] = await _timed([get(f"/upload/{u}/status") for u in ids])
        costs["list page"] = await _timed([get("/uploads")] * max(5, per // 4))
        costs["delete"] = await _timed([delete(u) for u in ids])
        return costs
    finally:
        f.close()
        await conn.close()


def layout_cost(folder: Path, entries: int, per: int) -> float:
    """ms per chunk-folder life in a folder holding ``entries`` other entries:
    mkdir, a chunk file created, fsynced and renamed, the folder fsynced,
    then all removed (what the first chunk and the delete of an upload do in
    tmp/). The entries are empty files (an entry is an entry to the
    folder's index, and files cost no data blocks)."""
    folder.mkdir(exist_ok=True)
    have = len(os.listdir(folder))
    for i in range(have, entries):
        os.close(os.open(folder / f"e{i:031x}", os.O_CREAT | os.O_WRONLY, 0o600))
    t0 = time.perf_counter()
    for k in range(per):
        d = folder / f"n{k:031x}"
        d.mkdir()
        fd = os.open(d / "chunk_0.part", os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(fd, b"x" * 4096)
        os.fdatasync(fd)
        os.close(fd)
        os.replace(d / "chunk_0.part", d / "chunk_0")
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)
        os.unlink(d / "chunk_0")
        d.rmdir()
    return (time.perf_counter() - t0) * 1000 / per


async def scale_figures(tmp: Path, data: Path, sizes: list[int], per: int, runs: int,
                        mysql_dsn: Callable[[str], str | None], log: Callable[[str], None],
                        baseline: Path | None = None) -> list[Figure]:
    """``mysql_dsn(suffix)``: a fresh database (None without MySQL);
    ``baseline``: another checkout whose server is measured in the same runs
    (its figures say "baseline")."""
    figures: list[Figure] = []
    builds = [("", None)] + ([(" baseline", baseline)] if baseline else [])
    for backend in ("sqlite", "mysql"):
        dsns = [mysql_dsn(f"{k}") if backend == "mysql" else None for k in range(len(builds))]
        if backend == "mysql" and None in dsns:
            figures.append(Figure("scale mysql", "ms", None, "-", None,
                                  note="skipped (no MySQL)"))
            continue
        figures += await _backend(tmp / f"scale-{backend}", data, backend,
                                  [(label, root, dsn) for (label, root), dsn in zip(builds, dsns)],
                                  sizes, per, runs, log)
    folder = tmp / "scale-layout"
    base = None
    for n in sizes:
        log(f"layout: {n:,} entries in one folder")
        value = statistics.median(layout_cost(folder, n, per) for _ in range(runs))
        base = base or value
        figures.append(Figure(f"scale layout tmp/ chunk folder @{n:,}", "ms", value,
                              "@0 ms", base, value / base))
    return figures


async def _backend(root: Path, data: Path, backend: str,
                   builds: list[tuple[str, Path | None, str | None]], sizes: list[int],
                   per: int, runs: int, log: Callable[[str], None]) -> list[Figure]:
    """``builds``: (label, checkout or None for this one, MySQL DSN); with
    several, each run measures them in turn, so their figures share minutes."""
    servers, scale_runs = [], []
    for k, (_, checkout, dsn) in enumerate(builds):
        folder = root / f"build{k}"
        folder.mkdir(parents=True)
        servers.append(uploader_server(folder, mysql_dsn=dsn, redis_url=None, root=checkout,
                                       extra_env={
            # The quota stays on (its counters are what is measured), out of reach.
            "UPLOADER_QUOTA_MAX_ACTIVE_UPLOADS": str(10**9)}))
    figures: list[Figure] = []
    base: list[dict[str, float]] = [{} for _ in builds]
    try:
        for server, (_, _, dsn), folder in zip(servers, builds,
                                               (root / f"build{k}" for k in range(len(builds)))):
            await server.start()
            run = ScaleRun(backend, server.port, server.pid, folder / "data",
                           None if dsn else folder / "data" / "uploader.db", dsn, data, log)
            if run.sqlite_path is not None and not run.sqlite_path.exists():
                raise RuntimeError(f"no SQLite database at {run.sqlite_path}")
            scale_runs.append(run)
        have = 0
        for n in sizes:
            if n > have:
                for run in scale_runs:
                    log(f"scale {backend}: inserting uploads {have:,}..{n:,}")
                    t0 = time.perf_counter()
                    await asyncio.to_thread(bulk_insert, run, have, n)
                    log(f"scale {backend}: {n - have:,} rows in {time.perf_counter() - t0:.0f}s")
                have = n
            samples: list[list[dict[str, float]]] = [[] for _ in builds]
            for _ in range(runs):
                for k, run in enumerate(scale_runs):
                    samples[k].append(await request_costs(run, per))
            for k, (label, _, _) in enumerate(builds):
                figures += _size_figures(f"{backend}{label}", n, samples[k], base[k])
            for extra in AT_SIZE:
                figures += await extra(scale_runs[0], n)
    finally:
        for server in servers:
            server.stop()
    return figures


def _size_figures(name: str, n: int, samples: list[dict[str, float]],
                  base: dict[str, float]) -> list[Figure]:
    figures = []
    costs = {op: statistics.median(s[op] for s in samples) for op in OPS}
    for op in OPS:
        base.setdefault(op, costs[op])
        # On a shared machine GET /healthz itself swings 2-3x between
        # sizes: "vs healthz" divides that out (op/healthz at this
        # size over op/healthz at 0).
        same_load = (costs[op] / costs["healthz"]) / (base[op] / base["healthz"])
        figures.append(Figure(f"scale {name} {op} @{n:,}", "ms", costs[op],
                              "@0 ms", base[op], costs[op] / base[op],
                              {"runs": [s[op] for s in samples],
                               "ratio_vs_healthz": same_load}))
    # Issue 21.2: inits per second against healthz per second.
    figures.append(Figure(f"scale {name} init/s vs healthz/s @{n:,}", "init/s",
                          1000 / costs["init"], "GET /healthz/s",
                          1000 / costs["healthz"], costs["healthz"] / costs["init"],
                          {"runs": [s["healthz"] / s["init"] for s in samples]}))
    return figures
