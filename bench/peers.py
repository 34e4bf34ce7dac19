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


class Peer:
    """One server under test, started once and measured in turn with the
    others: run k of every server lies in the same minutes (this machine is
    shared; a server measured alone, minutes later, meets another load)."""

    def __init__(self, name: str, proc: ServerProcess, send: Uploader,
                 clean: Callable[[], Awaitable[None]]) -> None:
        self.name, self.proc, self.send, self.clean = name, proc, send, clean
        self.rates: dict[int, list[float]] = {}
        self.cpu: dict[int, list[float]] = {}

    async def once(self, ctx: Ctx, size: int, streams: int, chunk: int) -> None:
        here = Ctx(ctx.host, self.proc.port, self.proc.pid, ctx.tmp, ctx.data, ctx.runs,
                   ctx.log)
        part = size // streams
        scratch(ctx, 2 * size)
        s0 = cpu_seconds(here.pid)
        t0 = time.perf_counter()
        await asyncio.gather(*(self.send(here, k * part, part, chunk) for k in range(streams)))
        seconds = time.perf_counter() - t0
        self.rates.setdefault(streams, []).append(part * streams / seconds / 1e6)
        self.cpu.setdefault(streams, []).append(
            (cpu_seconds(here.pid) - s0) / (part * streams / 1e9))
        await self.clean()

    def result(self, streams: int) -> dict[str, Any]:
        return {"value": statistics.median(self.rates[streams]),
                "cpu_s_per_gb": statistics.median(self.cpu[streams]),
                "runs": self.rates[streams]}


async def peer_figures(ctx: Ctx, size: int, chunk: int, with_tus: bool,
                       env: dict[str, str], baseline: Path | None = None) -> list[Figure]:
    """``baseline``: another checkout (say, main) measured in the same runs
    as two more peers, for before/after tables that share their minutes."""
    shapes = [(1, size), (4, size // 4)]
    peers: list[Peer] = []
    builds = [("ours", None)] + ([("baseline", baseline)] if baseline else [])
    for build, root in builds:
        for fsync in ("true", "false"):
            folder = ctx.tmp / f"peer-{build}-{fsync}"
            folder.mkdir()
            proc = uploader_server(folder, mysql_dsn=None, redis_url=None, root=root,
                                   extra_env={**env, "UPLOADER_STORAGE_FSYNC": fsync})

            async def clean_ours(folder: Path = folder) -> None:
                shutil.rmtree(folder / "data" / "store", ignore_errors=True)
                (folder / "data" / "store").mkdir()
            peers.append(Peer(f"{build} fsync {'on' if fsync == 'true' else 'off'}", proc,
                              ours_upload, clean_ours))
    store = ctx.tmp / "peer-minimal"
    store.mkdir()
    port = free_port()
    minimal = ServerProcess([sys.executable, "-m", "bench.minimal", str(port), str(store)],
                            {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
                            ctx.tmp, port, "/healthz", ctx.tmp / "minimal.log")

    async def clean_dir(folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
    peers.append(Peer("minimal", minimal, minimal_upload, lambda: clean_dir(store)))
    folder = tus.install(ctx.tmp, ctx.log) if with_tus else None
    if folder is not None:
        files = ctx.tmp / "peer-tus"
        files.mkdir()
        port = free_port()
        node = ServerProcess(["node", str(folder / "server.mjs"), str(port), str(files)],
                             None, folder, port, "/files", ctx.tmp / "tus.log")  # type: ignore[arg-type]
        peers.append(Peer("tus", node, tus_upload, lambda: clean_dir(files)))
    results: dict[str, list[dict[str, Any]] | None] = {"tus": None}
    started: list[Peer] = []
    try:
        for p in peers:
            try:
                await p.proc.start()
                started.append(p)
            except Exception as exc:
                if p.name != "tus":
                    raise
                ctx.log(f"tus peer failed to start: {exc!r}")  # optional: never fail the run
        for run in range(ctx.runs):
            for streams, _ in shapes:
                for p in started:
                    ctx.log(f"peers: run {run + 1}, {streams} stream(s), {p.name}")
                    await p.once(ctx, size, streams, chunk)
        for p in started:
            results[p.name] = [p.result(streams) for streams, _ in shapes]
    finally:
        for p in started:
            p.proc.stop()
    figures = []
    peer = results["tus"]
    note = "" if peer else "skipped: no @tus/server peer (--quick, or no npm)"
    for i, (streams, part) in enumerate(shapes):
        label = f"{streams}x{part // MiB}MiB in {chunk // MiB}MiB"
        ref = peer[i]["value"] if peer else None
        names = ["ours fsync on", "ours fsync off", "minimal"]
        if baseline:
            names[2:2] = ["baseline fsync on", "baseline fsync off"]
        for name in names:
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
    floor_server = results["minimal"]
    assert floor_server is not None
    md5_per_gb = md5_seconds(ctx, min(size, 256 * MiB)) / (min(size, 256 * MiB) / 1e9)
    for i, (streams, part) in enumerate(shapes):
        floor = floor_server[i]["cpu_s_per_gb"] + md5_per_gb
        for build in [b for b, _ in builds]:
            measured = results[f"{build} fsync off"]
            assert measured is not None
            value = measured[i]["cpu_s_per_gb"]
            figures.append(Figure(f"cpu_per_gb {streams}x{part // MiB}MiB {build} fsync off",
                                  "core-s/GB", value, "floor core-s/GB", floor, value / floor,
                                  {"minimal_cpu_s_per_gb": floor_server[i]["cpu_s_per_gb"],
                                   "md5_s_per_gb": md5_per_gb}))
    return figures
