"""What a tus final upload (tus-js-client's ``parallelUploads``) costs on the
S3 backend, next to the ``complete`` of the same bytes sent as one upload.

    python -m bench --only s3concat     # --quick: 4 x 8 MiB
    python bench/s3_concat.py [--part-mib 32] [--parts 4] [--runs 3] [--baseline CHECKOUT]

One moto_server, one ``uploader serve`` (S3, proxy mode, fsync off). Per run:

- reference: the bytes as one upload of our API (8 MiB chunks, 4 in flight,
  untimed), then ``POST complete`` timed: its merge hashes the staged chunk
  copies on local disk and completes the multipart upload;
- figure: ``parts`` tus partials of ``part`` bytes (PATCHed 4 at a time,
  untimed), then the final's ``POST /files/`` timed to its 201: the partials
  sealed, their objects copied inside S3 (UploadPartCopy), read once for the
  MD5, the final completed (uploader/concat_s3.py).

The uploader server's CPU seconds over each timed span beside it (/proc).
With ``--baseline CHECKOUT`` that checkout's server (same moto, same bucket)
creates a final of the same partials in each run too, right after ours.
moto copies and assembles in one Python process: the ratio says what the
final costs next to a complete here, not what either takes on AWS.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.client import Conn
from bench.figures import Figure
from bench.s3_upload import chunk_md5, standalone, start_moto, uploader_s3_server, warm
from bench.server import cpu_seconds
from bench.tus import _req

MiB, GiB = 1 << 20, 1 << 30
CHUNK = 8 * MiB
TUS = {"Tus-Resumable": "1.0.0"}


async def one_upload(port: int, pid: int, data: Path, size: int, md5: str
                     ) -> tuple[str, float, float]:
    """(upload id, seconds of complete, server CPU seconds of complete)."""
    api = Conn("127.0.0.1", port)
    up = await api.json("POST", "/upload/init", {"filename": "bench.bin", "size": size,
                                                 "chunk_size": CHUNK}, expect=201)
    uid, total = up["upload_id"], up["total_chunks"]
    indices = list(range(total))

    async def sender() -> None:
        conn = Conn("127.0.0.1", port)
        with open(data, "rb") as f:
            while indices:
                i = indices.pop(0)
                await conn.json("PUT", f"/upload/{uid}/chunk?index={i}", file=f,
                                offset=i * CHUNK, count=min(CHUNK, size - i * CHUNK))
        await conn.close()
    await asyncio.gather(*(sender() for _ in range(4)))
    t0, c0 = time.perf_counter(), cpu_seconds(pid)
    done = await api.json("POST", f"/upload/{uid}/complete", {"md5": md5})
    t1, c1 = time.perf_counter(), cpu_seconds(pid)
    assert done["status"] == "completed", done
    await api.close()
    return uid, t1 - t0, c1 - c0


async def partial(port: int, data: Path, offset: int, size: int) -> str:
    conn = Conn("127.0.0.1", port)
    status, _ = await _req(conn, "POST", "/files/", {
        **TUS, "Upload-Length": str(size), "Upload-Concat": "partial"})
    assert status == 201, status
    path = "/files/" + conn.last_location.rsplit("/", 1)[1]  # type: ignore[attr-defined]
    with open(data, "rb") as f:
        status, body = await _req(conn, "PATCH", path, {
            **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
            f, offset, size)
    assert status == 204, (status, body[:300])
    await conn.close()
    return path


async def concatenated(port: int, pid: int, data: Path, part: int, parts: int, md5: str
                       ) -> tuple[str, float, float]:
    """(final's id, seconds of the final's POST, server CPU seconds of it)."""
    paths = await asyncio.gather(*(partial(port, data, i * part, part) for i in range(parts)))
    conn = Conn("127.0.0.1", port)
    t0, c0 = time.perf_counter(), cpu_seconds(pid)
    status, body = await _req(conn, "POST", "/files/", {
        **TUS, "Upload-Concat": "final;" + " ".join(paths)})
    t1, c1 = time.perf_counter(), cpu_seconds(pid)
    assert status == 201, (status, body[:300])
    fid = conn.last_location.rsplit("/", 1)[1]  # type: ignore[attr-defined]
    await conn.close()
    api = Conn("127.0.0.1", port)
    doc = await api.json("GET", f"/upload/{fid}/status")
    assert doc["status"] == "completed" and doc["md5"] == md5, doc
    await api.close()
    return fid, t1 - t0, c1 - c0


async def s3_concat_figures(tmp: Path, data: Path, part: int, parts: int, runs: int,
                            log: Callable[[str], None],
                            baseline: Path | None = None) -> list[Figure]:
    import botocore.session
    work = tmp / "s3concat"
    work.mkdir(parents=True, exist_ok=True)
    size = part * parts
    md5 = await asyncio.to_thread(chunk_md5, data, 0, size)
    moto, endpoint = start_moto(work / "moto.log")
    builds = {"ours": None, **({"baseline": baseline} if baseline else {})}
    took: dict[str, list[float]] = {"complete": [], **{b: [] for b in builds}}
    cpu: dict[str, list[float]] = {"complete": [], **{b: [] for b in builds}}
    servers = {}
    try:
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        botocore.session.get_session().create_client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
            aws_secret_access_key="bench").create_bucket(Bucket=bucket)
        for build, root in builds.items():
            servers[build] = await uploader_s3_server(work / build, endpoint, bucket, False,
                                                      root).start()
        for _ in range(runs):
            warm(work / "scratch", 2 * size)
            ours = servers["ours"]
            uid, seconds, used = await one_upload(ours.port, ours.pid, data, size, md5)
            took["complete"].append(seconds)
            cpu["complete"].append(used)
            await delete(ours.port, uid)  # frees moto's memory
            for build, server in servers.items():
                fid, f_seconds, f_used = await concatenated(server.port, server.pid, data,
                                                            part, parts, md5)
                took[build].append(f_seconds)
                cpu[build].append(f_used)
                await delete(server.port, fid)
                log(f"s3concat {build}: final of {parts}x{part // MiB}MiB {f_seconds:.2f} s "
                    f"(server CPU {f_used:.2f} s)")
            log(f"s3concat: complete {seconds:.2f} s (server CPU {used:.2f} s)")
    finally:
        for build, server in servers.items():
            server.stop()
            for line in (work / build / "server.log").read_text().splitlines():
                if "concat of" in line:  # the server's account of the phases
                    log(f"{build}: " + line.split("uploader.merge", 1)[-1].strip(" :"))
        moto.terminate()
        moto.wait(30)
    med = {k: statistics.median(v) for k, v in took.items()}
    per_gib = {k: statistics.median(v) / (size / GiB) for k, v in cpu.items()}
    label = f"{parts}x{part // MiB}MiB"
    extra = {"runs_s": took, "server_cpu_s": cpu}

    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None
    figures = [Figure(f"s3_concat final of {label}", "ms", med["ours"] * 1e3,
                      f"complete {size // MiB}MiB ms", med["complete"] * 1e3,
                      ratio(med["ours"], med["complete"]), extra, note="moto on this machine"),
               Figure(f"s3_concat_server_cpu final of {label}", "s/GiB", per_gib["ours"],
                      "complete s/GiB", per_gib["complete"],
                      ratio(per_gib["ours"], per_gib["complete"]), extra)]
    if baseline:
        figures += [Figure(f"s3_concat final of {label} vs baseline", "ms", med["ours"] * 1e3,
                           "baseline ms", med["baseline"] * 1e3,
                           ratio(med["ours"], med["baseline"]), extra, note=str(baseline)),
                    Figure(f"s3_concat_server_cpu final of {label} vs baseline", "s/GiB",
                           per_gib["ours"], "baseline s/GiB", per_gib["baseline"],
                           ratio(per_gib["ours"], per_gib["baseline"]), extra)]
    return figures


async def delete(port: int, upload_id: str) -> None:
    conn = Conn("127.0.0.1", port)
    await conn.json("DELETE", f"/upload/{upload_id}", expect=204)
    await conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part-mib", type=int, default=32)
    ap.add_argument("--parts", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                    help="another checkout's server, measured in the same runs")
    args = ap.parse_args()
    size = args.part_mib * MiB * args.parts
    return standalone("uploader-s3concat-bench-", size, lambda tmp, data, log: s3_concat_figures(
        tmp, data, args.part_mib * MiB, args.parts, args.runs, log, args.baseline))

if __name__ == "__main__":
    sys.exit(main())
