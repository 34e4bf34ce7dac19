"""The ``uploader`` command: serve, worker, migrate, cleanup (and client commands)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from .config import Config, ConfigError, load_config
from .errors import UploadError

DEFAULT_CONFIG = "config.yaml"


def _load(args: argparse.Namespace) -> Config:
    path = args.config
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    overrides: dict[str, dict[str, Any]] = {}
    if getattr(args, "host", None):
        overrides.setdefault("server", {})["host"] = args.host
    if getattr(args, "port", None):
        overrides.setdefault("server", {})["port"] = args.port
    config = load_config(path, overrides=overrides)
    from .logs import configure_logging
    configure_logging(config.logging)  # the format and level the config asks for
    return config


def _tune_malloc() -> None:
    """Two malloc arenas instead of 8 x cores: freed 1 MiB body pieces were
    kept in one heap arena per I/O thread, so RSS grew with threads and
    streams (16x8 MiB: 153 MB -> ~78 MB). Fixing M_MMAP_THRESHOLD as well
    gave 67 MB but made every piece a fresh mmap: page faults cut ingest
    (fsync off, 4x8 MiB) from ~400 to ~230 MB/s, so it is not done."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


async def _serve(config: Config) -> None:
    from .app import make_app, make_server
    _tune_malloc()
    app = make_app(config)
    runtime = app.runtime
    await runtime.start()
    server = make_server(app, config)
    server.listen(config.server.port, config.server.host)
    logging.getLogger("uploader").info("serving on http://%s:%d", config.server.host,
                                       config.server.port)
    from .graceful import graceful_stop
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():  # a second signal: stop waiting for in-flight requests
            runtime.drain.force()
        stop.set()
        logging.getLogger("uploader").info("received %s", signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await stop.wait()
    await graceful_stop(server, runtime, config.server.shutdown_timeout)


def cmd_serve(args: argparse.Namespace) -> int:
    asyncio.run(_serve(_load(args)))
    return 0


async def _work(config: Config) -> None:
    """Merges from the queue, and nothing of HTTP: the runtime of an
    instance (recovery, the event dispatcher, which its merges feed) without
    a server or the expiry sweep."""
    from .runtime import build_runtime
    log = logging.getLogger("uploader")
    runtime = build_runtime(config, worker=True)
    await runtime.start(sweep=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await stop.wait()
    # Running merges get server.shutdown_timeout to finish; the rest stay
    # pending in the queue and another worker takes them after locks.ttl.
    if not await runtime.merges.wait(config.server.shutdown_timeout):
        log.warning("shutdown: cancelling merges still running; they are taken over later")
    await runtime.stop()


def cmd_worker(args: argparse.Namespace) -> int:
    config = _load(args)
    if config.merge.queue != "redis":
        print("uploader worker takes jobs from the merge queue: set merge.queue: redis "
              "(with locks.backend: redis)", file=sys.stderr)
        return 2
    _tune_malloc()
    asyncio.run(_work(config))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from .runtime import make_store
    config = _load(args)

    async def run() -> int:
        store = make_store(config)
        await store.open()
        try:
            return await store.migrate()
        finally:
            await store.close()
    print(f"schema version {asyncio.run(run())}")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from .runtime import build_runtime
    config = _load(args)

    async def run() -> str:
        runtime = build_runtime(config)
        await runtime.store.open()
        await runtime.storage.start()
        try:
            report = await runtime.expirer.sweep()
        finally:
            await runtime.stop()
        for upload_id in report.expired:
            print(f"expired {upload_id}")
        for upload_id in report.orphans:
            print(f"orphan {upload_id}")
        return report.summary()
    print(asyncio.run(run()))
    return 0


def cmd_hash_token(args: argparse.Namespace) -> int:
    """Print the SHA-256 hex of a token read from stdin, for auth.tokens.
    Read from stdin, not argv, so the token stays out of ps and shell history."""
    from .auth import hash_token
    token = sys.stdin.readline().strip()
    if not token:
        print("hash-token: no token on standard input", file=sys.stderr)
        return 2
    print(hash_token(token))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uploader", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", help="merge uploads from the queue (merge.queue: redis), "
                            "serving no HTTP")
    worker.set_defaults(func=cmd_worker)
    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    migrate.set_defaults(func=cmd_migrate)
    cleanup = sub.add_parser("cleanup", help="run one expiry sweep and print what it removed")
    cleanup.set_defaults(func=cmd_cleanup)
    hash_token = sub.add_parser("hash-token", help="print the SHA-256 of a token read from "
                                "stdin (for auth.tokens in the config)")
    hash_token.set_defaults(func=cmd_hash_token)
    for p in (serve, worker, migrate, cleanup):
        p.add_argument("--config", help=f"config file (default: ./{DEFAULT_CONFIG} if present)")
    try:
        from .client_cli import add_client_commands
    except ImportError:
        pass
    else:
        add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except UploadError as exc:  # Unavailable: the database or Redis is away
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        return 1
