"""The ``uploader`` command: serve, worker, migrate, cleanup, hash-token, and the
client commands (upload, status, download, list, delete).

Exit codes: 0 done, 1 failed (the server, the network, a file), 2 usage or
configuration error (one line naming the setting and where it was set),
130 interrupted (Ctrl-C), 141 stdout closed early (``uploader list | head``).
The server commands import the server's packages
only when run, so the client commands work with the client alone installed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import select
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from . import DISTRIBUTION, __version__

if TYPE_CHECKING:
    from .config import Config

DEFAULT_CONFIG = "config.yaml"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a tool SIGPIPE stopped
log = logging.getLogger("uploader")


SERVER_COMMANDS = ("serve", "migrate", "cleanup", "hash-token")


def _load(args: argparse.Namespace) -> Config:
    from .config import load_config
    from .logs import configure_logging
    path = args.config
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    overrides: dict[str, dict[str, Any]] = {}
    if getattr(args, "host", None):
        overrides.setdefault("server", {})["host"] = args.host
    if getattr(args, "port", None):
        overrides.setdefault("server", {})["port"] = args.port
    config = load_config(path, overrides=overrides,
                         override_sources={"server.host": "--host", "server.port": "--port"})
    configure_logging(config.logging)  # the format and level the config asks for
    env = sorted(name for name in os.environ if name.startswith("UPLOADER_"))
    log.info("configuration: %s%s",
             f"file {Path(path).resolve()}" if path else f"no file (no ./{DEFAULT_CONFIG})",
             f", environment {' '.join(env)}" if env else "")
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


async def _serve(config: Config, sockets: list[socket.socket]) -> None:
    from .app import make_app, make_server
    from .graceful import graceful_stop
    _tune_malloc()
    app = make_app(config)
    runtime = app.runtime
    try:
        await runtime.start()
        server = make_server(app, config)
        # Bound before the start; connections made since wait in the backlog.
        server.add_sockets(sockets)
    except BaseException:
        # e.g. a missing bucket: close what did open (a store left open keeps
        # its thread, and the process, alive), then say why.
        await runtime.stop()
        raise
    log.info("serving on http://%s:%d (uploader %s)", config.server.host, config.server.port,
             __version__)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():  # a second signal: stop waiting for in-flight requests
            runtime.drain.force()
        stop.set()
        log.info("received %s", signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await stop.wait()
    await graceful_stop(server, runtime, config.server.shutdown_timeout)


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args)
    from tornado.netutil import bind_sockets
    try:
        # Before anything starts: a port in use is one line, not a traceback
        # (and no half-started runtime).
        sockets = bind_sockets(config.server.port, config.server.host)
    except OSError as exc:
        print(f"uploader: cannot listen on {config.server.host}:{config.server.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    asyncio.run(_serve(config, sockets))
    return EXIT_OK


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
              "(with a shared locks.backend)", file=sys.stderr)
        return EXIT_USAGE
    _tune_malloc()
    asyncio.run(_work(config))
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    config = _load(args)
    from .runtime import make_store

    async def run() -> int:
        store = make_store(config)
        await store.open()
        try:
            return await store.migrate()
        finally:
            await store.close()
    print(f"schema version {asyncio.run(run())}")
    return EXIT_OK


def cmd_cleanup(args: argparse.Namespace) -> int:
    config = _load(args)
    from .runtime import build_runtime

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
        if report.expired_count > len(report.expired):
            print(f"... and {report.expired_count - len(report.expired)} more expired")
        for upload_id in report.orphans:
            print(f"orphan {upload_id}")
        return report.summary()
    print(asyncio.run(run()))
    return EXIT_OK


def cmd_hash_token(args: argparse.Namespace) -> int:
    """Print the SHA-256 hex of a token read from stdin, for auth.tokens.
    Read from stdin, not argv, so the token stays out of ps and shell history."""
    from .auth import hash_token
    token = sys.stdin.readline().strip()
    if not token:
        print("uploader: hash-token: no token on standard input", file=sys.stderr)
        return EXIT_USAGE
    print(hash_token(token))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uploader", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"uploader {__version__} ({DISTRIBUTION})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="address to bind (overrides server.host; default "
                       "127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (overrides server.port; default 8888)")
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
        p.add_argument("--config", metavar="PATH",
                       help=f"config file (default: ./{DEFAULT_CONFIG} if present); "
                            f"UPLOADER_<SECTION>_<KEY> variables override it")
    from .client_cli import add_client_commands
    add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        # The client commands say how to resume; the server stops on SIGINT
        # by itself once serving, so this is Ctrl-C during start-up.
        print("uploader: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # a socket's, not stdout's: a real failure
        return EXIT_BROKEN_PIPE
    except ImportError as exc:
        if args.command not in SERVER_COMMANDS or exc.name is None:
            raise
        print(f"uploader: {args.command} needs the server's packages ({exc.name} is missing): "
              f"pip install '{DISTRIBUTION}[server]'", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        known = _known_failure(exc)
        if known is None:
            raise
        code, message = known
        print(f"uploader: {message}", file=sys.stderr)
        return code


def _stdout_closed() -> bool:
    """Whether stdout's reader went away (``uploader list | head``). If so,
    stdout now points at /dev/null: the flush at exit must not fail again,
    and a Unix tool ends quietly there, as SIGPIPE would have stopped it.
    (SIGPIPE itself stays ignored: a server hanging up must be an error the
    client handles, not the end of the process.)"""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError):
        return False
    # A pipe's write end polls POLLERR once its last reader closed.
    if not any(mask & (select.POLLERR | select.POLLHUP) for _, mask in events):
        return False
    os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return True


def _known_failure(exc: Exception) -> tuple[int, str] | None:
    """The exit code and line of a failure that deserves one line, not a traceback."""
    # Looked up, not imported: uploader.config needs the server's packages,
    # and a ConfigError can only have come from a module already loaded.
    config_errors = sys.modules.get("uploader.config.errors")
    if config_errors is not None and isinstance(exc, config_errors.ConfigError):
        return EXIT_USAGE, str(exc)
    from .assets import AssetsMissing
    from .errors import UploadError
    if isinstance(exc, UploadError):  # Unavailable: the database or Redis is away
        return EXIT_FAILED, f"{exc.code}: {exc.message}"
    if isinstance(exc, AssetsMissing):
        return EXIT_FAILED, str(exc)
    return None
