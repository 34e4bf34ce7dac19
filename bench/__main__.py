"""python -m bench [--quick] [--runs N] [--mysql-redis] [--only KIND ...] [--env K=V ...]

Starts the server itself, generates its data under a temp folder in /tmp
(deleted at the end, as is the MySQL bench database), and prints a table plus
one JSON line per figure. Every figure is the median of --runs runs, next to a
reference measured in the same runs, as a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from . import figures as F
from .client import Conn
from .figures import Ctx, Figure, MiB
from .server import uploader_server

KINDS = ["ingest", "complete", "peak_rss", "status", "puts_per_s", "tus_ingest", "peers",
         "page", "locks", "s3", "sweep", "scale"]
# Measured only when asked for (--only): not part of `make bench`.
OPT_IN = ["s3concat"]
GiB = 1 << 30


def plan(quick: bool) -> dict:
    if quick:
        return {"ingest_size": 32 * MiB, "complete": [("8MiB", 8 * MiB), ("16MiB", 16 * MiB),
                                                       ("32MiB", 32 * MiB)],
                "status_chunks": 2000, "gets": 50, "put_uploads": 50, "put_per": 4,
                "tus_size": 32 * MiB, "lock_pairs": 100, "s3_size": 32 * MiB,
                "peer_size": 32 * MiB, "page_size": 32 * MiB, "sweep_rows": 5000,
                "sweep_probes": 100, "scale_sizes": [0, 2_000], "scale_per": 20,
                "s3concat_part": 8 * MiB}
    return {"ingest_size": 512 * MiB, "complete": [("64MiB", 64 * MiB), ("1GiB", GiB),
                                             ("4GiB", 4 * GiB)],
            "status_chunks": 10_000, "gets": 200, "put_uploads": 200, "put_per": 20,
            "tus_size": GiB, "lock_pairs": 1000, "s3_size": GiB, "peer_size": GiB,
            "page_size": GiB, "sweep_rows": 100_000, "sweep_probes": 500,
            "scale_sizes": [0, 100_000, 1_000_000], "scale_per": 200,
            "s3concat_part": 32 * MiB}


def make_data(path: Path, size: int) -> None:
    """Random bytes (a 16 MiB random block repeated: MD5 cost does not care)."""
    block = os.urandom(16 * MiB)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            left -= f.write(block[:min(left, len(block))])


def create_mysql_db(name: str, drop: bool = False) -> str:
    import pymysql
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`" if drop
                        else f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        conn.close()
    return f"mysql://root@127.0.0.1:3306/{name}"


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table(figs: list[Figure]) -> str:
    rows = [("figure", "value", "reference", "ratio", "srv CPU%", "cli CPU%")]
    scale = any("ratio_vs_healthz" in f.extra for f in figs)
    if scale:
        rows[0] += ("ratio vs healthz",)
    for f in figs:
        rows.append((f.name, f"{fmt(f.value)} {f.unit}" if f.value is not None else f.note,
                     f"{fmt(f.ref_value)} {f.ref_name}" if f.ref_value is not None else "-",
                     f"{f.ratio:.2f}" if f.ratio is not None else "-",
                     fmt(f.extra.get("server_cpu_pct")), fmt(f.extra.get("client_cpu_pct")))
                    + ((fmt(f.extra.get("ratio_vs_healthz")),) if scale else ()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[Figure]:
    p = plan(args.quick)
    if args.ingest_mib:
        p["ingest_size"] = args.ingest_mib * MiB
    if args.scale_sizes:
        p["scale_sizes"] = [int(n) for n in args.scale_sizes.split(",")]
    if args.complete_mib:
        p["complete"] = [(f"{n}MiB", n * MiB) for n in args.complete_mib]
    grid = [tuple(int(x) for x in g.split("x")) for g in args.grid.split(",")]
    kinds = set(args.only or KINDS)
    figs: list[Figure] = []
    log = lambda msg: print(f"# {msg}", file=sys.stderr, flush=True)  # noqa: E731

    def emit(fig: Figure) -> None:
        figs.append(fig)
        print(json.dumps(asdict(fig)), flush=True)

    async def locks() -> None:
        # In this process, against the services themselves (no server).
        from .locks import lock_figures
        for fig in await lock_figures(p["lock_pairs"], log):
            emit(fig)

    async def sweep() -> None:
        # Servers and a database of its own: a million rows must not slow
        # the other figures.
        from .sweep import sweep_figures
        folder = Path(tempfile.mkdtemp(prefix="uploader-bench-sweep-", dir="/tmp"))
        name = f"uploader_bench_sweep_{os.getpid()}" if args.mysql_redis else None
        try:
            dsn = create_mysql_db(name) if name else None
            for fig in await sweep_figures(folder, dsn, "redis://127.0.0.1:6379/14" if name
                                           else None, args.sweep_rows or p["sweep_rows"],
                                           p["sweep_probes"], log,
                                           dict(kv.split("=", 1) for kv in args.env)):
                emit(fig)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            if name:
                create_mysql_db(name, drop=True)

    if kinds <= {"locks", "sweep"}:  # needs neither the main server nor its data
        if "locks" in kinds:
            await locks()
        if "sweep" in kinds:
            await sweep()
        return figs
    tmp = Path(tempfile.mkdtemp(prefix="uploader-bench-", dir="/tmp"))
    db = f"uploader_bench_{os.getpid()}" if args.mysql_redis else None

    server = None
    try:
        dsn = create_mysql_db(db) if db else None
        biggest = max([p["ingest_size"], p["tus_size"], p["s3_size"], p["page_size"]]
                      + [s for _, s in p["complete"]])
        make_data(tmp / "data.bin", biggest)
        extra = dict(kv.split("=", 1) for kv in args.env)
        server = uploader_server(tmp, mysql_dsn=dsn,
                                 redis_url="redis://127.0.0.1:6379/14" if db else None,
                                 extra_env=extra)
        await server.start()
        ctx = Ctx("127.0.0.1", server.port, server.pid, tmp, tmp / "data.bin", args.runs, log)
        log(f"server pid {server.pid} on port {server.port}; data under {tmp}; "
            f"a scratch file of each run's size is written and deleted (untimed) before it")
        if "ingest" in kinds:
            for streams, chunk in grid:
                emit(await F.ingest(ctx, p["ingest_size"], streams, chunk * MiB))
        if kinds & {"complete", "peak_rss"}:
            done = await F.complete(ctx, p["complete"], streams=args.complete_streams)
            for fig in done:
                emit(fig)
            if len(p["complete"]) >= 2:
                # Issue 19: complete of 1 GiB no more than twice the 64 MiB figure.
                (small, _), (large, _) = p["complete"][0], p["complete"][1]
                by = {f.name: f.value for f in done}
                a, b = by.get(f"complete {large}"), by.get(f"complete {small}")
                if a is not None and b:
                    emit(Figure(f"complete {large} vs {small}", "ms", a,
                                f"complete {small} ms", b, a / b))
        if "status" in kinds:
            emit(await F.status_latency(ctx, p["status_chunks"], p["gets"]))
        if "puts_per_s" in kinds:
            await puts_per_s(ctx, p, args.baseline, extra, emit)
        if "tus_ingest" in kinds:
            tus_runs = [(p["tus_size"], 1, 8 * MiB), (p["tus_size"], 4, 8 * MiB)]
            for fig in await tus_figures(ctx, args, tus_runs, log):
                emit(fig)
        if "page" in kinds:
            from .page import page_figures
            for fig in await page_figures(ctx, p["page_size"], log, lambda: clean_uploads(ctx),
                                          peer=not args.quick or args.tus,
                                          profile=args.page_trace):
                emit(fig)
        server.stop()
        if "peers" in kinds:
            from .peers import peer_figures
            for fig in await peer_figures(ctx, p["peer_size"], 8 * MiB,
                                          not args.quick or args.tus, extra, args.baseline):
                emit(fig)
        if "locks" in kinds:
            await locks()
        if "s3" in kinds:
            for fig in await s3_figures(ctx, p["s3_size"], log, args.baseline):
                emit(fig)
        if "s3concat" in kinds:
            from .s3_concat import s3_concat_figures
            for fig in await s3_concat_figures(ctx.tmp, ctx.data, p["s3concat_part"], 4,
                                               ctx.runs, log, args.baseline):
                emit(fig)
        if "sweep" in kinds:
            await sweep()
        if "scale" in kinds:
            for fig in await scale_figures(ctx, p, log, args.baseline):
                emit(fig)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if db:
            create_mysql_db(db, drop=True)
    return figs


async def puts_per_s(ctx: Ctx, p: dict, baseline: Path | None, extra: dict[str, str],
                     emit) -> None:  # type: ignore[no-untyped-def]
    """PUTs/s of ours, and of ``baseline``'s server in the same runs."""
    other = None
    if baseline is not None:
        folder = ctx.tmp / "baseline"
        folder.mkdir(exist_ok=True)
        other = uploader_server(folder, mysql_dsn=None, redis_url=None, extra_env=extra,
                                root=baseline)
        await other.start()
    try:
        base = other and Ctx(ctx.host, other.port, other.pid, ctx.tmp, ctx.data, ctx.runs,
                             ctx.log)
        for size in (1024, 8192, 65536):
            for fig in await F.puts_per_second(ctx, size, p["put_uploads"], p["put_per"], base):
                emit(fig)
    finally:
        if other is not None:
            other.stop()


async def clean_uploads(ctx: Ctx) -> None:
    """Every upload of our server removed (after a run that made some)."""
    conn = Conn(ctx.host, ctx.port)
    doc = await conn.json("GET", "/uploads")
    await conn.close()
    await F.delete(ctx, [u["upload_id"] for u in doc["uploads"]])


async def tus_figures(ctx: Ctx, args: argparse.Namespace, runs: list[tuple[int, int, int]],
                      log) -> list[Figure]:  # type: ignore[no-untyped-def]
    """Our /files/ endpoint (every chunk MD5-recorded, the whole file merged
    and MD5-verified before the last PATCH is answered) next to @tus/server 2
    + file-store (no checksums at all): same client, runs taking turns; the
    peer is skipped with --quick (unless --tus)."""
    from . import tus
    note = "ratio = ours / @tus/server"
    folder = None
    if args.quick and not args.tus:
        note = "peer skipped (--quick)"
    elif (folder := tus.install(ctx.tmp, log)) is None:
        note = "peer skipped (no npm)"
    ours, peer = await tus.side_by_side(ctx, runs, ctx.port, ctx.pid,
                                        lambda: clean_uploads(ctx), folder, log)
    if folder is not None and peer is None:
        note = "peer skipped (failed)"
    figures = []
    for i, ((size, streams, patch), mine) in enumerate(zip(runs, ours)):
        other = peer[i] if peer else None
        name = (f"tus_ingest {streams}x{size // streams // MiB}MiB in "
                f"{patch // MiB}MiB PATCHes")
        figures.append(Figure(
            name, "MB/s", mine["value"], "@tus/server MB/s", other and other["value"],
            (mine["value"] / other["value"]) if other else None,
            {"server_cpu_pct": mine["server_cpu_pct"], "runs": mine["runs"],
             "peer_cpu_pct": other and other["server_cpu_pct"],
             "peer_runs": other and other["runs"]}, note=note))
    return figures


async def scale_figures(ctx: Ctx, p: dict, log,  # type: ignore[no-untyped-def]
                        baseline: Path | None = None) -> list[Figure]:
    """Per-request costs as uploads pile up (bench/scale.py): its own servers,
    SQLite and MySQL (a database of its own, dropped after)."""
    from .scale import scale_figures as measure
    db = f"uploader_bench_scale_{os.getpid()}"
    made: list[str] = []

    def mysql_dsn(suffix: str) -> str | None:
        try:
            made.append(create_mysql_db(db + suffix))
        except Exception as exc:  # no MySQL here: the SQLite half still runs
            log(f"scale: no MySQL ({exc!r})")
            return None
        return made[-1]
    try:
        return await measure(ctx.tmp, ctx.data, p["scale_sizes"], p["scale_per"], ctx.runs,
                             mysql_dsn, log, baseline)
    finally:
        for dsn in made:
            create_mysql_db(dsn.rsplit("/", 1)[1], drop=True)


async def s3_figures(ctx: Ctx, size: int, log,  # type: ignore[no-untyped-def]
                     baseline: Path | None = None) -> list[Figure]:
    """Proxy vs direct through moto, page-like (bench/s3_upload.py)."""
    from .s3_upload import s3_figures as measure
    try:
        return await measure(ctx.tmp, ctx.data, size, 8 * MiB, 4, ctx.runs, log, baseline)
    except FileNotFoundError as exc:  # moto is in the test extra only
        log(f"s3 figures skipped: {exc}")
        label = f"4x8MiB {size // MiB}MiB"
        return [Figure(f"s3_direct {label}", "MB/s", None, "proxy MB/s", None,
                       note="skipped (no moto_server)")]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run (smoke test)")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    parser.add_argument("--mysql-redis", action="store_true",
                        help="MySQL (a bench database it creates) + Redis db 14")
    parser.add_argument("--only", nargs="*", choices=KINDS + OPT_IN,
                        help="measure only these kinds")
    parser.add_argument("--env", action="append", default=[], metavar="UPLOADER_X_Y=V",
                        help="extra server setting (repeatable), e.g. UPLOADER_STORAGE_FSYNC=false")
    parser.add_argument("--grid", default="1x1,1x8,1x32,4x1,4x8,4x32,16x1,16x8,16x32",
                        help="ingest streams x chunk MiB pairs (default: all nine)")
    parser.add_argument("--ingest-mib", type=int, help="bytes per ingest run, in MiB")
    parser.add_argument("--complete-mib", type=int, nargs="+",
                        help="file sizes of the complete figures, in MiB")
    parser.add_argument("--complete-streams", type=int, default=16,
                        help="streams uploading before each complete (and for peak RSS)")
    parser.add_argument("--scale-sizes", help="uploads in the database for the scale section, "
                        "e.g. 0,1000000 (default 0,100000,1000000)")
    parser.add_argument("--tus", action="store_true",
                        help="run the tus peers (server, page) even with --quick")
    parser.add_argument("--page-trace", type=Path, metavar="FILE",
                        help="after the page runs, one more under Chromium's tracing: the "
                             "trace to FILE (chrome://tracing) and a summary on stderr")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="peers, s3, s3concat, puts_per_s, scale: also measure the "
                             "server of this checkout (e.g. a worktree of main) in the same runs")
    parser.add_argument("--sweep-rows", type=int, help="abandoned uploads the sweep figure removes "
                        "(default 100,000; --quick 5,000)")
    args = parser.parse_args()
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    # A SIGTERM still runs the cleanup (server stopped, temp data deleted).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.time()
    figs = asyncio.run(run(args))
    print()
    print(table(figs))
    print(f"\n{len(figs)} figures in {time.time() - t0:.0f}s"
          f"{' (quick)' if args.quick else ''}; medians of {args.runs} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
