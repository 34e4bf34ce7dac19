"""The optional peer: @tus/server + @tus/file-store (Node), installed with npm
into the run's temp folder. Any failure to install or start skips it."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Awaitable, Callable

from .client import Conn
from .figures import Ctx, scratch
from .server import ServerProcess, cpu_seconds, free_port

SERVER_JS = """
import http from 'node:http';
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';
const [port, dir] = process.argv.slice(2);
const tus = new Server({ path: '/files', datastore: new FileStore({ directory: dir }) });
http.createServer((req, res) => tus.handle(req, res)).listen(Number(port), '127.0.0.1');
"""
PACKAGES = ["@tus/server@2", "@tus/file-store@2"]


def install(tmp: Path, log: "callable") -> Path | None:  # type: ignore[valid-type]
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        log("tus peer skipped: node/npm not found")
        return None
    folder = tmp / "tus"
    if (folder / "server.mjs").exists():
        return folder  # installed earlier in this run (tus_ingest, then peers)
    folder.mkdir(exist_ok=True)
    try:
        subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", *PACKAGES],
                       cwd=folder, check=True, timeout=180, capture_output=True)
    except (subprocess.SubprocessError, OSError) as exc:
        log(f"tus peer skipped: npm install failed ({exc})")
        return None
    (folder / "server.mjs").write_text(SERVER_JS)
    return folder


async def tus_upload(host: str, port: int, data: Path, offset: int, size: int,
                     patch: int) -> None:
    conn = Conn(host, port)
    head = {"Tus-Resumable": "1.0.0", "Upload-Length": str(size)}
    status, _ = await _req(conn, "POST", "/files", head)
    location = conn.last_location  # type: ignore[attr-defined]
    assert status == 201, status
    path = "/files/" + location.rsplit("/files/", 1)[1]
    sent = 0
    with open(data, "rb") as f:
        while sent < size:
            n = min(patch, size - sent)
            status, _ = await _req(conn, "PATCH", path, {
                "Tus-Resumable": "1.0.0", "Upload-Offset": str(sent),
                "Content-Type": "application/offset+octet-stream"}, f, offset + sent, n)
            assert status == 204, status
            sent += n
    await conn.close()


async def _req(conn: Conn, method: str, path: str, headers: dict[str, str], f=None,
               off: int = 0, count: int = 0) -> tuple[int, bytes]:
    """A tus request on the raw client (extra headers, Location kept)."""
    if conn.writer is None:
        await conn.open()
    assert conn.reader is not None and conn.writer is not None
    lines = [f"{method} {path} HTTP/1.1", "Host: bench", f"Content-Length: {count}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    conn.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    if f is not None:
        await conn.writer.drain()
        await asyncio.get_running_loop().sendfile(conn.writer.transport, f, off, count)
    raw = (await conn.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status = int(raw.split(" ", 2)[1])
    size, chunked, close = 0, False, False
    for line in raw.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length":
            size = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection" and value.lower() == "close":
            close = True
        elif name == "location":
            conn.last_location = value  # type: ignore[attr-defined]
    if chunked:  # Node answers POST with a chunked body
        body = b""
        while True:
            n = int((await conn.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            body += (await conn.reader.readexactly(n + 2))[:n]
            if n == 0:
                break
    else:
        body = await conn.reader.readexactly(size) if size else b""
    if close:
        await conn.close()
    return status, body


async def tus_run(ctx: Ctx, port: int, pid: int, size: int, streams: int,
                  patch: int) -> tuple[float, float]:
    """One run: ``streams`` parallel tus uploads of size/streams bytes each,
    in ``patch``-byte PATCHes, against the tus server on ``port`` (the same
    client for ours and the peer). Returns (MB/s, server CPU %)."""
    part = size // streams
    scratch(ctx, 2 * size)
    s0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(tus_upload(ctx.host, port, ctx.data, k * part, part, patch)
                           for k in range(streams)))
    seconds = time.perf_counter() - t0
    return part * streams / seconds / 1e6, 100 * (cpu_seconds(pid) - s0) / seconds


class Side:
    """One server's runs of every shape, summarised as medians."""

    def __init__(self, port: int, pid: int, clean: Callable[[], Awaitable[None]]) -> None:
        self.port, self.pid, self.clean = port, pid, clean
        self.rates: dict[int, list[float]] = {}
        self.cpu: dict[int, list[float]] = {}

    async def once(self, ctx: Ctx, shape: int, size: int, streams: int, patch: int) -> None:
        rate, cpu = await tus_run(ctx, self.port, self.pid, size, streams, patch)
        self.rates.setdefault(shape, []).append(rate)
        self.cpu.setdefault(shape, []).append(cpu)
        await self.clean()

    def result(self, shape: int) -> dict:
        return {"value": statistics.median(self.rates[shape]),
                "server_cpu_pct": statistics.median(self.cpu[shape]),
                "runs": self.rates[shape]}


def start_peer(ctx: Ctx, folder: Path) -> tuple[ServerProcess, Path]:
    """@tus/server + file-store on its own port."""
    port = free_port()
    store = ctx.tmp / "tus-files"
    store.mkdir(exist_ok=True)
    proc = ServerProcess(["node", str(folder / "server.mjs"), str(port), str(store)], None,
                         folder, port, "/files", ctx.tmp / "tus.log")
    proc.env = None  # type: ignore[assignment]
    return proc, store


async def side_by_side(ctx: Ctx, runs: list[tuple[int, int, int]], ours_port: int,
                       ours_pid: int, clean_ours: Callable[[], Awaitable[None]],
                       folder: Path | None, log: Callable[[str], None]
                       ) -> tuple[list[dict], list[dict] | None]:
    """Ours and the peer (when ``folder`` holds it) run by run, taking turns:
    a busy machine slows both alike instead of whichever ran in the bad minute."""
    sides = {"ours": Side(ours_port, ours_pid, clean_ours)}
    peer: ServerProcess | None = None
    if folder is not None:
        peer, store = start_peer(ctx, folder)

        async def clean_peer() -> None:
            shutil.rmtree(store, ignore_errors=True)
            store.mkdir()
        try:
            await peer.start()
            sides["peer"] = Side(peer.port, peer.pid, clean_peer)
        except Exception as exc:  # the peer is optional: never fail the run for it
            log(f"tus peer failed to start: {exc!r}")
            peer = None
    try:
        for run in range(ctx.runs):
            for shape, (size, streams, patch) in enumerate(runs):
                for name, side in list(sides.items()):
                    log(f"tus: run {run + 1}, {streams} stream(s), {name}")
                    try:
                        await side.once(ctx, shape, size, streams, patch)
                    except Exception as exc:
                        if name == "ours":
                            raise
                        log(f"tus peer failed: {exc!r}")
                        del sides[name]
    finally:
        if peer is not None:
            peer.stop()
    ours = [sides["ours"].result(i) for i in range(len(runs))]
    other = sides.get("peer")
    return ours, ([other.result(i) for i in range(len(runs))] if other else None)
