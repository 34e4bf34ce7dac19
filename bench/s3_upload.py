"""1 GiB through the S3 backend (moto), proxy mode vs direct mode.

    .venv/bin/python bench/s3_upload.py [--size-mib 1024] [--chunk-mib 8] [--parallel 4]

Starts moto_server and one ``uploader serve`` process (SQLite, s3 backend,
fsync off), generates random data under /tmp at run time and deletes it
after. Each mode uploads the same file: init (with the file's MD5), chunks
``parallel`` at a time, complete; the time is init to completed. Proxy: the
client PUTs chunks to the server, which streams them to disk and on to S3
(UploadPart) and hashes the staged copies at complete. Direct: the client asks
the server for a presigned URL per chunk and PUTs to S3 itself; complete
assembles the object and reads it back once to verify the MD5.

Direct mode is the reference measured in the same run (the bytes cross moto
only, plus one read-back); the ratio printed is proxy / direct. moto keeps
objects in memory in a single Python process, so it bounds both figures:
they compare the modes, they do not predict AWS.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import botocore.session
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

MiB = 1 << 20
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_line(proc: subprocess.Popen, pattern: str) -> re.Match:
    """Read the process's output until ``pattern`` shows, then keep draining
    it in a thread so the pipe never fills."""
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(pattern, line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return m
    raise RuntimeError(f"process exited ({proc.poll()}) before printing {pattern!r}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def make_data(path: Path, size: int) -> str:
    md5 = hashlib.md5()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(64 * MiB, left))
            md5.update(block)
            f.write(block)
            left -= len(block)
    return md5.hexdigest()


def warm_memory(directory: Path, size: int) -> None:
    """This VM hands freed memory back to its host; touching it again is
    slow. Write and delete a scratch file of the run's size, untimed."""
    scratch = directory / "scratch"
    block = b"\0" * (64 * MiB)
    with open(scratch, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
    scratch.unlink()


async def run_upload(base: str, path: Path, size: int, md5: str, chunk: int, parallel: int,
                     direct: bool) -> float:
    client = AsyncHTTPClient(max_clients=parallel * 2)

    async def call(method: str, url: str, body: bytes | None = None,
                   headers: dict | None = None) -> dict:
        resp = await client.fetch(HTTPRequest(url, method=method, body=body, headers=headers,
                                              request_timeout=600))
        return json.loads(resp.body) if resp.body else {}

    start = time.perf_counter()
    up = await call("POST", f"{base}/upload/init", json.dumps(
        {"filename": "bench.bin", "size": size, "chunk_size": chunk, "md5": md5}).encode())
    uid, total = up["upload_id"], up["total_chunks"]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    fd = os.open(path, os.O_RDONLY)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            data = await asyncio.to_thread(os.pread, fd, chunk, i * chunk)
            digest = await asyncio.to_thread(lambda: hashlib.md5(data).hexdigest())
            if direct:
                signed = await call("POST", f"{base}/upload/{uid}/chunk/{i}/url",
                                    json.dumps({"md5": digest}).encode())
                await client.fetch(HTTPRequest(signed["url"], method="PUT", body=data,
                                               headers=signed["headers"], request_timeout=600))
            else:
                await call("PUT", f"{base}/upload/{uid}/chunk?index={i}&md5={digest}", data)

    try:
        await asyncio.gather(*(worker() for _ in range(parallel)))
    finally:
        os.close(fd)
    sent = time.perf_counter() - start
    done = await call("POST", f"{base}/upload/{uid}/complete", b"{}")
    elapsed = time.perf_counter() - start
    print(f"  chunks sent in {sent:.2f} s, complete took {elapsed - sent:.2f} s", flush=True)
    assert done["status"] == "completed" and done["md5"] == md5, done
    # Frees moto's memory before the next run (moto takes its time over it).
    await client.fetch(HTTPRequest(f"{base}/upload/{uid}", method="DELETE", request_timeout=600))
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--chunk-mib", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    size, chunk = args.size_mib * MiB, args.chunk_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="uploader-s3-bench-", dir="/tmp"))
    procs: list[subprocess.Popen] = []
    try:
        print(f"generating {args.size_mib} MiB of random data under {work} ...", flush=True)
        data = work / "data.bin"
        md5 = make_data(data, size)
        moto = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(moto)
        endpoint = wait_for_line(moto, r"Running on (http://[\d.]+:\d+)").group(1)
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        botocore.session.get_session().create_client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
            aws_secret_access_key="x").create_bucket(Bucket=bucket)
        results: dict[str, list[float]] = {"proxy": [], "direct": []}
        for mode in ("proxy", "direct"):
            port = free_port()
            env = {**os.environ, "UPLOADER_STORAGE_BACKEND": "s3",
                   "UPLOADER_STORAGE_DATA_DIR": str(work / f"server-{mode}"),
                   "UPLOADER_STORAGE_FSYNC": "false", "UPLOADER_EXPIRY_ENABLED": "false",
                   # complete answers when the merge is done, never 202.
                   "UPLOADER_MERGE_WAIT_SECONDS": "600",
                   "UPLOADER_S3_ENDPOINT_URL": endpoint, "UPLOADER_S3_BUCKET": bucket,
                   "UPLOADER_S3_ADDRESSING_STYLE": "path", "UPLOADER_S3_ACCESS_KEY_ID": "x",
                   "UPLOADER_S3_SECRET_ACCESS_KEY": "x",
                   "UPLOADER_S3_DIRECT": "true" if mode == "direct" else "false"}
            server = subprocess.Popen([str(VENV_BIN / "uploader"), "serve", "--port", str(port)],
                                      env=env, cwd=work, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
            procs.append(server)
            wait_for_line(server, r"serving on")
            for _ in range(args.runs):
                warm_memory(work, size)
                seconds = asyncio.run(run_upload(f"http://127.0.0.1:{port}", data, size, md5,
                                                 chunk, args.parallel, mode == "direct"))
                results[mode].append(seconds)
                print(f"{mode:6s} {seconds:6.2f} s  {size / seconds / 1e6:6.0f} MB/s", flush=True)
            stop(server)
            procs.remove(server)
        best = {mode: min(times) for mode, times in results.items()}
        print(f"\n{args.size_mib} MiB, {args.chunk_mib} MiB chunks, {args.parallel} parallel "
              f"(best of {args.runs}): proxy {best['proxy']:.2f} s, direct {best['direct']:.2f} s,"
              f" proxy/direct = {best['proxy'] / best['direct']:.2f}")
    finally:
        for proc in procs:
            stop(proc)
        for p in sorted(work.rglob("*"), reverse=True):
            p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
        work.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
