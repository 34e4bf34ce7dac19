"""1 GiB through the S3 backend (moto), proxy mode vs direct mode, with a
page-like client: 4 chunks in flight, 8 MiB chunks, each chunk's MD5 hashed
by the client before it is sent (the page's hashing worker), the whole-file
MD5 given at init and checked by the server at complete.

    python -m bench --only s3 [--baseline CHECKOUT]   # part of `make bench` (--quick: 32 MiB)
    python bench/s3_upload.py [--size-mib 1024] [--chunk-mib 8] [--parallel 4] [--runs 3]
                              [--baseline CHECKOUT]

Proxy: each chunk is PUT to the server, which stages it on disk and sends it
on to S3 (UploadPart); complete hashes the staged copies. Direct: the client
hashes the chunks in order a window ahead of the senders and asks
``POST /upload/{id}/urls`` for the URLs of the chunk needed plus those
waiting (as the page does), then PUTs each chunk to S3 with its Content-MD5;
complete assembles the object and checks it by its parts (``s3.direct_verify:
parts``, the default: nothing read back) or reads it back once for the MD5
(``direct readback``). With ``--baseline CHECKOUT`` that checkout's server
runs direct mode too ("baseline direct", its defaults): the before column.
Every server is started once and each run uploads through all of them in
turn, so run k of each mode lies in the same minutes.

Timed: init to completed. Beside each mode's MB/s: the uploader server's CPU
seconds per GiB over the same span (/proc), which direct mode should nearly
save. moto keeps every object in one Python process and bounds both figures:
they compare the modes, they do not predict AWS.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.client import Conn, HttpError
from bench.figures import Figure
from bench.server import ServerProcess, cpu_seconds, free_port

MiB, GiB = 1 << 20, 1 << 30
VENV_BIN = Path(sys.executable).parent
WINDOW = 16  # chunks hashed ahead of the senders = most URLs asked for at once


def start_moto(log: Path) -> tuple[subprocess.Popen[str], str]:
    exe = VENV_BIN / "moto_server"
    if not exe.exists():
        raise FileNotFoundError("moto_server is not installed (the test extra has it)")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"Running on (http://[\d.]+:\d+)", line)
        if m:
            out = proc.stdout

            def drain() -> None:  # moto logs every request: keep the pipe empty
                with open(log, "a") as f:
                    for rest in out:
                        f.write(rest)
            threading.Thread(target=drain, daemon=True).start()
            return proc, m.group(1)
    raise RuntimeError(f"moto_server exited ({proc.poll()}) before it listened")


def uploader_s3_server(tmp: Path, endpoint: str, bucket: str, direct: bool,
                       root: Path | None = None,
                       extra_env: dict[str, str] | None = None) -> ServerProcess:
    """``root``: the checkout whose server runs (default: this one)."""
    port = free_port()
    root = root or Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADER_")}
    env.update({
        "UPLOADER_STORAGE_BACKEND": "s3", "UPLOADER_STORAGE_DATA_DIR": str(tmp / "data"),
        "UPLOADER_STORAGE_FSYNC": "false", "UPLOADER_STORAGE_MIN_FREE_BYTES": "0",
        "UPLOADER_EXPIRY_ENABLED": "false",
        "UPLOADER_MERGE_WAIT_SECONDS": "600",  # complete answers when done, never 202
        "UPLOADER_S3_ENDPOINT_URL": endpoint, "UPLOADER_S3_BUCKET": bucket,
        "UPLOADER_S3_ADDRESSING_STYLE": "path", "UPLOADER_S3_ACCESS_KEY_ID": "bench",
        "UPLOADER_S3_SECRET_ACCESS_KEY": "bench",
        "UPLOADER_S3_DIRECT": "true" if direct else "false",
        "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(root) + os.pathsep + env.get("PYTHONPATH", ""),
        **(extra_env or {}),
    })
    argv = [sys.executable, "-m", "uploader", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--config", str(root / "config.yaml")]
    tmp.mkdir(parents=True, exist_ok=True)
    return ServerProcess(argv, env, tmp, port, "/healthz", tmp / "server.log")


def chunk_md5(data: Path, offset: int, length: int) -> str:
    digest = hashlib.md5()
    with open(data, "rb") as f:
        f.seek(offset)
        while length > 0:
            piece = f.read(min(length, 8 * MiB))
            digest.update(piece)
            length -= len(piece)
    return digest.hexdigest()


def warm(path: Path, size: int) -> None:
    """The cold-memory trap (bench/README.md): write and delete a file of the
    run's size, untimed, so the timed run finds warm memory."""
    block = bytes(8 * MiB)
    with open(path, "wb") as f:
        for _ in range(0, size, len(block)):
            f.write(block)
    path.unlink()


async def json_call(conn: Conn, method: str, path: str, doc: Any = None, **kw: Any) -> Any:
    """conn.json, once more on a fresh connection if the server closed an
    idle one meanwhile (connections.header_timeout: 30 s between requests)."""
    try:
        return await conn.json(method, path, doc, **kw)
    except (asyncio.IncompleteReadError, ConnectionError):
        await conn.close()
        return await conn.json(method, path, doc, **kw)


async def page_like_upload(port: int, pid: int, data: Path, size: int, md5: str, chunk: int,
                           parallel: int, direct: bool) -> tuple[str, list[float], list[float]]:
    """One upload as the page sends it: (upload id, [seconds sending the
    chunks, seconds completing], [server CPU seconds in each])."""
    api = Conn("127.0.0.1", port)
    up = await api.json("POST", "/upload/init", {"filename": "bench.bin", "size": size,
                                                 "chunk_size": chunk, "md5": md5}, expect=201)
    uid, total = up["upload_id"], up["total_chunks"]
    assert up.get("direct", False) is direct, up
    hashed: asyncio.Queue[tuple[int, str]] = asyncio.Queue(maxsize=WINDOW)
    waiting: dict[int, str] = {}  # hashed, not yet taken by a sender
    signed: dict[int, dict[str, Any]] = {}
    fetching: list[asyncio.Future[None]] = []

    async def producer() -> None:  # the page's hashing worker: in order, a window ahead
        for i in range(total):
            digest = await asyncio.to_thread(chunk_md5, data, i * chunk, min(chunk, size - i * chunk))
            waiting[i] = digest
            await hashed.put((i, digest))
        for _ in range(parallel):
            await hashed.put((-1, ""))

    async def url_for(conn: Conn, i: int, digest: str) -> dict[str, Any]:
        while i not in signed:
            if fetching:  # another sender's batch may hold ours
                await asyncio.shield(fetching[0])
                continue
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fetching.append(fut)
            try:
                want = [(i, digest)] + [(j, m) for j, m in waiting.items() if j not in signed][
                    :WINDOW - 1]
                doc = await json_call(conn, "POST", f"/upload/{uid}/urls", {
                    "parts": [{"index": j, "md5": m} for j, m in want]})
                signed.update((p["index"], p) for p in doc["parts"])
            finally:
                fetching.remove(fut)
                fut.set_result(None)
        return signed.pop(i)

    async def sender() -> None:
        conn = Conn("127.0.0.1", port)
        stores: dict[tuple[str, int], Conn] = {}
        with open(data, "rb") as f:
            while True:
                i, digest = await hashed.get()
                if i < 0:
                    break
                waiting.pop(i, None)
                offset, length = i * chunk, min(chunk, size - i * chunk)
                if not direct:
                    await conn.json("PUT", f"/upload/{uid}/chunk?index={i}&md5={digest}",
                                    file=f, offset=offset, count=length)
                    continue
                part = await url_for(conn, i, digest)
                url = urlsplit(part["url"])
                key = (url.hostname or "", url.port or 80)
                store = stores.setdefault(key, Conn(*key))
                status, body = await store.request("PUT", f"{url.path}?{url.query}", file=f,
                                                   offset=offset, count=length,
                                                   headers=part["headers"])
                if status != 200:
                    raise HttpError(f"part {i} -> {status} {body[:300]!r}")
        await conn.close()
        for store in stores.values():
            await store.close()

    t0, c0 = time.perf_counter(), cpu_seconds(pid)
    await asyncio.gather(producer(), *(sender() for _ in range(parallel)))
    t1, c1 = time.perf_counter(), cpu_seconds(pid)
    done = await json_call(api, "POST", f"/upload/{uid}/complete", {"md5": md5})
    t2, c2 = time.perf_counter(), cpu_seconds(pid)
    # Verified by parts, the server never hashed the file: md5 is null and
    # ours is kept as the claim it is.
    shown = done["md5_claimed"] if done.get("verified") == "parts" else done["md5"]
    assert done["status"] == "completed" and shown == md5, done
    await api.close()
    return uid, [t1 - t0, t2 - t1], [c1 - c0, c2 - c1]


# (name, direct mode, extra server env, from the baseline checkout)
MODES = [("proxy", False, {}, False), ("direct", True, {}, False),
         ("direct readback", True, {"UPLOADER_S3_DIRECT_VERIFY": "readback"}, False),
         ("baseline direct", True, {}, True)]


async def s3_figures(tmp: Path, data: Path, size: int, chunk: int, parallel: int, runs: int,
                     log: Callable[[str], None], baseline: Path | None = None) -> list[Figure]:
    """Every mode against one moto_server, interleaved run by run; figures:
    MB/s (direct, next to proxy), the uploader server's CPU seconds per GiB
    (direct, next to proxy), and direct readback's (and the baseline's, with
    ``baseline``) CPU next to direct's, the before and after of the same run."""
    import botocore.session
    work = tmp / "s3"
    work.mkdir(parents=True, exist_ok=True)
    md5 = await asyncio.to_thread(chunk_md5, data, 0, size)
    moto, endpoint = start_moto(work / "moto.log")
    modes = [m for m in MODES if baseline is not None or not m[3]]
    rates: dict[str, list[float]] = {m[0]: [] for m in modes}
    cpu: dict[str, list[float]] = {m[0]: [] for m in modes}  # server s/GiB, init to completed
    # [sending, completing] per run: seconds, and server CPU s/GiB
    phases: dict[str, list[list[float]]] = {m[0]: [] for m in modes}
    phase_cpu: dict[str, list[list[float]]] = {m[0]: [] for m in modes}
    servers: dict[str, ServerProcess] = {}
    try:
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        botocore.session.get_session().create_client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
            aws_secret_access_key="bench").create_bucket(Bucket=bucket)
        for name, direct, env, from_baseline in modes:
            servers[name] = await uploader_s3_server(
                work / name.replace(" ", "-"), endpoint, bucket, direct,
                baseline if from_baseline else None, env).start()
        for _ in range(runs):
            for name, direct, _env, _base in modes:
                server = servers[name]
                warm(work / "scratch", 2 * size)
                uid, times, used = await page_like_upload(
                    server.port, server.pid, data, size, md5, chunk, parallel, direct)
                per_gib = [round(c / (size / GiB), 2) for c in used]
                cpu[name].append(sum(per_gib))
                rates[name].append(size / sum(times) / 1e6)
                phases[name].append([round(t, 2) for t in times])
                phase_cpu[name].append(per_gib)
                log(f"s3 {name}: {sum(times):.2f} s ({times[0]:.2f} sending, {times[1]:.2f} "
                    f"completing); server CPU {per_gib[0]:.2f} + {per_gib[1]:.2f} s/GiB")
                conn = Conn("127.0.0.1", server.port)  # frees moto's memory
                await conn.json("DELETE", f"/upload/{uid}", expect=204)
                await conn.close()
    finally:
        for server in servers.values():
            server.stop()
        moto.terminate()
        moto.wait(30)
    med = {m: statistics.median(v) for m, v in rates.items()}
    cpu_med = {m: statistics.median(v) for m, v in cpu.items()}
    label = f"{parallel}x{chunk // MiB}MiB {size // MiB}MiB"
    extra = {"runs": rates, "server_cpu_s_per_gib": cpu, "send_complete_s": phases,
             "send_complete_server_cpu_s_per_gib": phase_cpu}

    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None
    figures = [Figure(f"s3_direct {label}", "MB/s", med["direct"], "proxy MB/s", med["proxy"],
                      med["direct"] / med["proxy"], extra, note="moto on this machine"),
               Figure(f"s3_server_cpu direct {label}", "s/GiB", cpu_med["direct"],
                      "proxy s/GiB", cpu_med["proxy"],
                      ratio(cpu_med["direct"], cpu_med["proxy"]), extra)]
    for before in ("direct readback", "baseline direct"):
        if before in cpu_med:
            figures.append(Figure(f"s3_server_cpu {before} {label}", "s/GiB", cpu_med[before],
                                  "proxy s/GiB", cpu_med["proxy"],
                                  ratio(cpu_med[before], cpu_med["proxy"]), extra))
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--chunk-mib", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                    help="another checkout whose server runs direct mode too (the before)")
    args = ap.parse_args()
    size = args.size_mib * MiB
    return standalone("uploader-s3-bench-", size, lambda tmp, data, log: s3_figures(
        tmp, data, size, args.chunk_mib * MiB, args.parallel, args.runs, log, args.baseline))


def standalone(prefix: str, size: int,
               measure: Callable[[Path, Path, Callable[[str], None]], Awaitable[list[Figure]]]
               ) -> int:
    """Run one section on its own (``python -m bench.s3_upload`` and the
    like): a random data file of ``size`` bytes in a temp folder, the
    figures printed as JSON lines, the folder removed."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        data = tmp / "data.bin"
        with open(data, "wb") as f:  # random: nothing can cheat
            for _ in range(0, size, 64 * MiB):
                f.write(os.urandom(min(64 * MiB, size - f.tell())))
        figs = asyncio.run(measure(tmp, data, lambda m: print(f"# {m}", flush=True)))
        for fig in figs:
            print(json.dumps(fig.__dict__), flush=True)
    finally:
        for p in sorted(tmp.rglob("*"), reverse=True):
            p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
        tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
