"""Issue 19's server figures: ingest to a completed, verified file next to
@tus/server + file-store, ours with fsync on and off, the minimal Tornado PUT
server, and the server's CPU per GB next to its floor; all in one run.

Every server gets the same bytes from the same raw client: one upload of
``size`` in ``chunk``-byte requests on one connection, then ``streams``
uploads of size/streams in parallel (one connection each), timed from the
first byte to the answer that says the file is there (ours: ``complete``
200, following a 202; tus: the last PATCH; minimal: the last PUT).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from . import tus
from .client import Conn
from .figures import Ctx, Figure, MiB, md5_seconds, scratch
from .server import ServerProcess, cpu_seconds, free_port, uploader_server

Uploader = Callable[[Ctx, int, int, int], Awaitable[None]]


async def ours_upload(ctx: Ctx, offset: int, size: int, chunk: int) -> None:
    conn = Conn(ctx.host, ctx.port)
    doc = await conn.json("POST", "/upload/init", {"filename": "peer.bin", "size": size,
                                                   "chunk_size": chunk}, expect=201)
    uid = doc["upload_id"]
    with open(ctx.data, "rb") as f:
        for i in range(doc["total_chunks"]):
            await conn.json("PUT", f"/upload/{uid}/chunk?index={i}", file=f,
                            offset=offset + i * chunk, count=min(chunk, size - i * chunk))
    status, body = await conn.request("POST", f"/upload/{uid}/complete")
    while status == 202 or (status == 200 and b'"merging"' in body):
        await asyncio.sleep(0.005)
        status, body = await conn.request("GET", f"/upload/{uid}/status")
        if b'"completed"' in body:
            break
    if status != 200:
        raise RuntimeError(f"complete -> {status} {body[:200]!r}")
    await conn.close()


async def minimal_upload(ctx: Ctx, offset: int, size: int, chunk: int) -> None:
    conn = Conn(ctx.host, ctx.port)
    name = f"f{offset}"
    with open(ctx.data, "rb") as f:
        for start in range(0, size, chunk):
            status, _ = await conn.request("PUT", f"/f/{name}?offset={start}", file=f,
                                           offset=offset + start,
                                           count=min(chunk, size - start))
            assert status == 200, status
    await conn.close()


async def tus_upload(ctx: Ctx, offset: int, size: int, chunk: int) -> None:
    await tus.tus_upload(ctx.host, ctx.port, ctx.data, offset, size, chunk)


async def rate(ctx: Ctx, send: Uploader, size: int, streams: int, chunk: int,
               clean: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    rates, cpu = [], []
    part = size // streams
    for _ in range(ctx.runs):
        scratch(ctx, 2 * size)
        s0 = cpu_seconds(ctx.pid)
        t0 = time.perf_counter()
        await asyncio.gather(*(send(ctx, k * part, part, chunk) for k in range(streams)))
        seconds = time.perf_counter() - t0
        rates.append(part * streams / seconds / 1e6)
        cpu.append(cpu_seconds(ctx.pid) - s0)
        await clean()
    return {"value": statistics.median(rates), "cpu_s_per_gb": statistics.median(cpu)
            / (part * streams / 1e9), "runs": rates}


async def measure(ctx: Ctx, proc: ServerProcess, send: Uploader, shapes: list[tuple[int, int]],
                  size: int, chunk: int, clean: Callable[[], Awaitable[None]]
                  ) -> list[dict[str, Any]]:
    await proc.start()
    try:
        here = Ctx(ctx.host, proc.port, proc.pid, ctx.tmp, ctx.data, ctx.runs, ctx.log)
        return [await rate(here, send, size, streams, chunk, clean) for streams, _ in shapes]
    finally:
        proc.stop()


async def peer_figures(ctx: Ctx, size: int, chunk: int, with_tus: bool,
                       env: dict[str, str]) -> list[Figure]:
    shapes = [(1, size), (4, size // 4)]
    results: dict[str, list[dict[str, Any]] | None] = {}
    for fsync in ("true", "false"):
        folder = ctx.tmp / f"peer-ours-{fsync}"
        folder.mkdir()
        proc = uploader_server(folder, mysql_dsn=None, redis_url=None,
                               extra_env={**env, "UPLOADER_STORAGE_FSYNC": fsync})

        async def clean_ours(folder: Path = folder) -> None:
            shutil.rmtree(folder / "data" / "store", ignore_errors=True)
            (folder / "data" / "store").mkdir()
        ctx.log(f"peers: ours, fsync {fsync}")
        results[f"ours fsync {'on' if fsync == 'true' else 'off'}"] = await measure(
            ctx, proc, ours_upload, shapes, size, chunk, clean_ours)
    store = ctx.tmp / "peer-minimal"
    store.mkdir()
    port = free_port()
    minimal = ServerProcess([sys.executable, "-m", "bench.minimal", str(port), str(store)],
                            {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
                            ctx.tmp, port, "/healthz", ctx.tmp / "minimal.log")

    async def clean_store(store: Path = store) -> None:
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir()
    ctx.log("peers: minimal Tornado PUT server")
    results["minimal"] = await measure(ctx, minimal, minimal_upload, shapes, size, chunk,
                                       clean_store)
    results["tus"] = None
    folder = tus.install(ctx.tmp, ctx.log) if with_tus else None
    if folder is not None:
        files = ctx.tmp / "peer-tus"
        files.mkdir()
        port = free_port()
        node = ServerProcess(["node", str(folder / "server.mjs"), str(port), str(files)],
                             None, folder, port, "/files", ctx.tmp / "tus.log")  # type: ignore[arg-type]
        ctx.log("peers: @tus/server + file-store")
        try:
            results["tus"] = await measure(ctx, node, tus_upload, shapes, size, chunk,
                                           lambda: clean_store(files))
        except Exception as exc:  # the peer is optional: never fail the run for it
            ctx.log(f"tus peer failed: {exc!r}")
    figures = []
    peer = results["tus"]
    note = "" if peer else "peer skipped"
    for i, (streams, part) in enumerate(shapes):
        label = f"{streams}x{part // MiB}MiB in {chunk // MiB}MiB"
        ref = peer[i]["value"] if peer else None
        for name in ("ours fsync on", "ours fsync off", "minimal"):
            mine = results[name]
            assert mine is not None
            title = (f"peer_ingest {label} {name}" if name != "minimal"
                     else f"peer_ingest {label} minimal Tornado PUT+MD5")
            figures.append(Figure(title, "MB/s", mine[i]["value"], "@tus/server MB/s", ref,
                                  mine[i]["value"] / ref if ref else None,
                                  {"cpu_s_per_gb": mine[i]["cpu_s_per_gb"],
                                   "runs": mine[i]["runs"],
                                   "peer_cpu_s_per_gb": peer[i]["cpu_s_per_gb"] if peer else None},
                                  note=note))
    # CPU per GB: ours with every check on (fsync off: the disk's wait is no
    # CPU) against its floor, the minimal server (receive, write, one MD5)
    # plus one more MD5 pass (the wire format hashes each chunk and the file).
    ours_off, floor_server = results["ours fsync off"], results["minimal"]
    assert ours_off is not None and floor_server is not None
    md5_per_gb = md5_seconds(ctx, min(size, 256 * MiB)) / (min(size, 256 * MiB) / 1e9)
    for i, (streams, part) in enumerate(shapes):
        floor = floor_server[i]["cpu_s_per_gb"] + md5_per_gb
        value = ours_off[i]["cpu_s_per_gb"]
        figures.append(Figure(f"cpu_per_gb {streams}x{part // MiB}MiB ours fsync off",
                              "core-s/GB", value, "floor core-s/GB", floor, value / floor,
                              {"minimal_cpu_s_per_gb": floor_server[i]["cpu_s_per_gb"],
                               "md5_s_per_gb": md5_per_gb}))
    return figures
