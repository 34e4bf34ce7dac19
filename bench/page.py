"""The page figure: headless Chromium uploads one file through our page to our
server, next to tus-js-client in the same Chromium uploading the same file to
@tus/server + file-store (npm packages cached under ~/.cache/uploader-bench).

Timed from handing the file to the page's input until the page says done
(our card's data-state, or tus-js-client's onSuccess). The browser's CPU is
the sum over Chromium's processes (/proc) over the same span, so the hashing
workers, the renderer and the network service all count."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import statistics
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Awaitable, Callable

from .figures import Ctx, Figure, MiB, scratch
from .server import CLK_TCK, ServerProcess, cpu_seconds, free_port
from .tus import PACKAGES

CHROMIUM = "/usr/bin/chromium"
CACHE = Path(os.environ.get("UPLOADER_BENCH_CACHE", Path.home() / ".cache" / "uploader-bench"))
TUS_JS_CLIENT = "tus-js-client@4.3.1"   # the version the tests pin (tests/support/node.py)
TIMEOUT_MS = 900_000

# @tus/server on one origin with a minimal page around tus-js-client's browser
# build: same origin as ours, so neither side pays CORS preflights. The client
# keeps its defaults (one PATCH streaming the whole Blob).
PEER_JS = """
import http from 'node:http';
import fs from 'node:fs';
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';
const [port, dir] = process.argv.slice(2);
const tus = new Server({ path: '/files', datastore: new FileStore({ directory: dir }) });
const client = fs.readFileSync('node_modules/tus-js-client/dist/tus.min.js');
const page = `<!doctype html><meta charset=utf-8><title>tus-js-client</title>
<input type=file id=f><script src="/tus.min.js"></script><script>
document.getElementById('f').onchange = (e) => {
  const up = new tus.Upload(e.target.files[0], {
    endpoint: '/files',
    onSuccess() { document.body.dataset.state = 'done'; },
    onError(err) { document.body.dataset.state = 'failed'; document.title = String(err); },
  });
  up.start();
};
document.body.dataset.ready = 'true';
</script>`;
http.createServer((req, res) => {
  if (req.url.startsWith('/files')) return tus.handle(req, res);
  if (req.url === '/tus.min.js') {
    res.writeHead(200, { 'Content-Type': 'text/javascript' }); return res.end(client);
  }
  res.writeHead(200, { 'Content-Type': 'text/html' }); res.end(page);
}).listen(Number(port), '127.0.0.1');
"""


def install_peer(log: Callable[[str], None]) -> Path | None:
    """@tus/server, file-store and tus-js-client, installed once into the cache."""
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        log("page peer skipped: node/npm not found")
        return None
    folder = CACHE / "page-peer"
    folder.mkdir(parents=True, exist_ok=True)
    packages = [*PACKAGES, TUS_JS_CLIENT]
    stamp = folder / ".installed"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # two benches at once install once
        if not stamp.exists() or stamp.read_text() != " ".join(packages):
            (folder / "package.json").write_text('{"private": true}\n')
            try:
                subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund",
                                *packages], cwd=folder, check=True, timeout=300,
                               capture_output=True)
            except (subprocess.SubprocessError, OSError) as exc:
                log(f"page peer skipped: npm install failed ({exc})")
                return None
            stamp.write_text(" ".join(packages))
    (folder / "server.mjs").write_text(PEER_JS)
    return folder


def chromium_cpu(root: int) -> dict[int, tuple[str, float]]:
    """(process type, CPU seconds) of every Chromium process below ``root``
    (by /proc; the type is its --type= switch, "browser" without one)."""
    parent: dict[int, int] = {}
    stat: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            exe = os.readlink(f"/proc/{entry}/exe")
        except OSError:
            continue
        pid = int(entry)
        parent[pid] = int(fields[1])
        if "chrom" in exe:
            stat[pid] = fields
    out = {}
    for pid, fields in stat.items():
        p = pid
        while p > 1 and p != root:
            p = parent.get(p, 1)
        if p == root:
            out[pid] = (process_type(pid), (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def process_type(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            # Chromium's children rewrite theirs into one space-joined string.
            args = f.read().decode(errors="replace").replace("\0", " ").split()
    except OSError:
        return "?"
    kind = next((a.split("=", 1)[1] for a in args if a.startswith("--type=")), "browser")
    sub = next((a.split("=", 1)[1].rsplit(".", 1)[-1] for a in args
                if a.startswith("--utility-sub-type=")), "")
    return f"{kind}:{sub}" if sub else kind


def cpu_delta(before: dict[int, tuple[str, float]],
              after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two samples, by process type (a process born
    in between counts from zero)."""
    out: dict[str, float] = defaultdict(float)
    for pid, (kind, v) in after.items():
        out[kind] += v - before.get(pid, (kind, 0.0))[1]
    return dict(out)


async def timed_upload(ctx: Ctx, browser: Any, url: str, path: Path, done: str,
                       clean: Callable[[], Awaitable[None]], size: int,
                       server: int) -> tuple[float, float, float]:
    """(seconds, browser CPU seconds, server CPU seconds) of one upload of
    ``path`` from a fresh context; ``done`` is the selector that appears when
    the page is done; ``server`` the pid of the server it uploads to."""
    context = await browser.new_context()
    try:
        pg = await context.new_page()
        await pg.goto(url)
        await pg.wait_for_selector("body[data-ready=true]")
        scratch(ctx, 2 * size)
        c0 = chromium_cpu(os.getpid())
        s0 = cpu_seconds(server)
        t0 = time.perf_counter()
        await pg.set_input_files("input[type=file]", str(path))
        await pg.wait_for_selector(f"{done}, [data-state=failed]", timeout=TIMEOUT_MS)
        seconds = time.perf_counter() - t0
        kinds = cpu_delta(c0, chromium_cpu(os.getpid()))
        server_cpu = cpu_seconds(server) - s0
        ctx.log("browser CPU s by process: " + ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])))
        if await pg.query_selector("[data-state=failed]"):
            raise RuntimeError(f"upload failed in {url}: {await pg.title()}")
    finally:
        await context.close()
    await clean()
    return seconds, sum(kinds.values()), server_cpu


async def page_figures(ctx: Ctx, size: int, log: Callable[[str], None],
                       clean_ours: Callable[[], Awaitable[None]], peer: bool = True,
                       profile: Path | None = None) -> list[Figure]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        return [skipped(size, "skipped (no playwright)")]
    if not os.path.exists(CHROMIUM):
        return [skipped(size, "skipped (no chromium)")]
    path = ctx.tmp / "page.bin"
    with open(ctx.data, "rb") as src, open(path, "wb") as dst:
        os.copy_file_range(src.fileno(), dst.fileno(), size)
    folder = install_peer(log) if peer else None
    store = ctx.tmp / "page-tus-files"
    store.mkdir(exist_ok=True)
    server: ServerProcess | None = None

    async def clean_peer() -> None:
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir()
    ours_url = f"http://{ctx.host}:{ctx.port}/"
    ours_done = ".card[data-state=done]"
    try:
        if folder is not None:
            port = free_port()
            server = ServerProcess(["node", str(folder / "server.mjs"), str(port), str(store)],
                                   None, folder, port, "/", ctx.tmp / "page-tus.log")  # type: ignore[arg-type]
            await server.start()
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            try:
                mine, theirs = [], []
                for run in range(ctx.runs):
                    mine.append(await timed_upload(ctx, browser, ours_url, path, ours_done,
                                                   clean_ours, size, ctx.pid))
                    log(f"page run {run + 1}: ours {size / mine[-1][0] / 1e6:.0f} MB/s")
                    if server is not None:
                        theirs.append(await timed_upload(
                            ctx, browser, f"http://{ctx.host}:{server.port}/", path,
                            "body[data-state=done]", clean_peer, size, server.pid))
                        log(f"page run {run + 1}: tus-js-client "
                            f"{size / theirs[-1][0] / 1e6:.0f} MB/s")
                hashing = [await hash_only(ctx, browser, ours_url, path, size)
                           for _ in range(ctx.runs)]
                log(f"page hashing alone: {statistics.median(hashing):.0f} MB/s")
                if profile is not None:
                    await trace(ctx, browser, ours_url, path, ours_done, clean_ours, profile,
                                log)
            finally:
                await browser.close()
    finally:
        if server is not None:
            server.stop()
        path.unlink(missing_ok=True)
    out = figures(size, mine, theirs, "" if peer else "skipped peer (--quick)")
    rate = out[0].value or 0
    out.append(Figure(out[0].name.replace("page ", "page_hash_only "), "MB/s",
                      statistics.median(hashing), "page upload MB/s", rate,
                      statistics.median(hashing) / rate if rate else None,
                      {"runs": hashing}, note="the page's hasher over the file, nothing sent"))
    return out


def figures(size: int, mine: list[tuple[float, float, float]],
            theirs: list[tuple[float, float, float]], why: str) -> list[Figure]:
    gb = size / 1e9
    label = f"{size // MiB}MiB" if size < 1 << 30 else f"{size >> 30}GiB"
    rate = statistics.median(size / s / 1e6 for s, _, _ in mine)
    cpu = statistics.median(c / gb for _, c, _ in mine)
    peer_rate = statistics.median(size / s / 1e6 for s, _, _ in theirs) if theirs else None
    peer_cpu = statistics.median(c / gb for _, c, _ in theirs) if theirs else None
    # The server shares the machine's cores with the browser: its CPU% beside.
    srv = statistics.median(100 * c / s for s, _, c in mine)
    peer_srv = statistics.median(100 * c / s for s, _, c in theirs) if theirs else None
    note = "ratio = ours / tus-js-client" if theirs else (why or "skipped peer (failed)")
    return [
        Figure(f"page {label} Chromium", "MB/s", rate, "tus-js-client MB/s", peer_rate,
               rate / peer_rate if peer_rate else None,
               {"runs": [size / s / 1e6 for s, _, _ in mine], "server_cpu_pct": srv,
                "peer_runs": [size / s / 1e6 for s, _, _ in theirs],
                "peer_server_cpu_pct": peer_srv}, note=note),
        Figure(f"page_cpu {label} Chromium", "CPU s/GB", cpu, "tus-js-client CPU s/GB",
               peer_cpu, cpu / peer_cpu if peer_cpu else None,
               {"runs": [c / gb for _, c, _ in mine],
                "peer_runs": [c / gb for _, c, _ in theirs]},
               note="browser processes' /proc CPU s per GB" if theirs else note),
    ]


def skipped(size: int, note: str) -> Figure:
    return Figure(f"page {size // MiB}MiB Chromium", "MB/s", None, "tus-js-client MB/s", None,
                  note=note)


async def hash_only(ctx: Ctx, browser: Any, url: str, path: Path, size: int) -> float:
    """MB/s of the page's own hasher (hasher.js, its pool as the server
    configures it) over the file with nothing sent: the bound hashing puts on
    the upload."""
    context = await browser.new_context()
    try:
        pg = await context.new_page()
        await pg.goto(url)
        await pg.wait_for_selector("body[data-ready=true]")
        await pg.evaluate("""() => document.body.append(Object.assign(
          document.createElement("input"), { type: "file", id: "bench-input" }))""")
        await pg.set_input_files("#bench-input", str(path))
        scratch(ctx, 2 * size)
        return await pg.evaluate(r"""async () => {
          const src = document.querySelector('script[type="module"]').src;
          const { Hasher } = await import(src.replace(/app\.js(\?.*)?$/, "hasher.js"));
          const settings = JSON.parse(document.getElementById("settings").textContent);
          const file = document.getElementById("bench-input").files[0];
          const total = Math.ceil(file.size / settings.chunk_size);
          const h = new Hasher(file, settings.chunk_size, { workers: settings.hash_workers });
          const t0 = performance.now();
          // The pass's read-ahead: a few chunks per worker at a time.
          const ahead = 2 * settings.hash_workers + 2;
          const running = new Set();
          for (let i = 0; i < total; i++) {
            while (running.size >= ahead || i >= h.fedCount + 2 * ahead) {
              await Promise.race([...running, new Promise((r) => {
                const off = h.listen(() => { off(); r(); });
              })]);
            }
            const p = h.hash(i).then(() => running.delete(p));
            running.add(p);
          }
          await h.final(total);
          const seconds = (performance.now() - t0) / 1000;
          h.close();
          return file.size / seconds / 1e6;
        }""")
    finally:
        await context.close()


async def trace(ctx: Ctx, browser: Any, url: str, path: Path, done: str,
                clean: Callable[[], Awaitable[None]], out: Path,
                log: Callable[[str], None]) -> None:
    """One more (untimed) upload of ours under Chromium's tracing (what the
    performance panel records); writes the trace to ``out`` and logs where
    each thread spent its time."""
    context = await browser.new_context()
    try:
        pg = await context.new_page()
        await pg.goto(url)
        await pg.wait_for_selector("body[data-ready=true]")
        await browser.start_tracing(page=pg, path=str(out), categories=[
            "toplevel", "devtools.timeline", "v8.execute", "disabled-by-default-devtools.timeline",
            "blink.user_timing", "net", "loading"])
        await pg.set_input_files("input[type=file]", str(path))
        await pg.wait_for_selector(done, timeout=TIMEOUT_MS)
        await browser.stop_tracing()
    finally:
        await context.close()
    await clean()
    for line in summarize(json.loads(out.read_text())):
        log(line)


def summarize(doc: Any) -> list[str]:
    """Per thread: wall and CPU seconds of its top-level tasks (outermost
    only; wall exceeds CPU when the thread waited for a core) and the event
    names inside them that took the most wall time."""
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    names: dict[tuple[int, int], str] = {}
    tasks: dict[tuple[int, int], list[Any]] = defaultdict(list)
    by_name: dict[tuple[int, int], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in events:
        key = (e.get("pid", 0), e.get("tid", 0))
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            names[key] = e["args"]["name"]
        elif e.get("ph") == "X" and "dur" in e:
            if "toplevel" in e.get("cat", ""):
                tasks[key].append(e)
            else:
                by_name[key][e["name"]] += e["dur"] / 1e6
    busy: dict[tuple[int, int], tuple[float, float]] = {}
    for key, es in tasks.items():
        es.sort(key=lambda e: (e["ts"], -e["dur"]))
        wall = cpu = 0.0
        end = -1
        for e in es:
            if e["ts"] >= end:   # nested top-level events are counted once
                wall += e["dur"] / 1e6
                cpu += e.get("tdur", 0) / 1e6
                end = e["ts"] + e["dur"]
        busy[key] = (wall, cpu)
    lines = ["thread: wall s / CPU s of its tasks [what inside took the most wall s]"]
    for key, (wall, cpu) in sorted(busy.items(), key=lambda kv: -kv[1][0])[:8]:
        top = sorted(by_name[key].items(), key=lambda kv: -kv[1])[:5]
        detail = ", ".join(f"{n} {v:.2f}" for n, v in top)
        lines.append(f"  {names.get(key, key)} pid {key[0]}: {wall:.2f} / {cpu:.2f}  [{detail}]")
    return lines
