"""Build everything from the config in one place (ARCHITECTURE.md section 1)."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import tornado.httpserver
import tornado.httputil
import tornado.web

from .auth import Authenticator
from .cleanup import Expirer
from .config import Config
from .connections import make_guarded_server
from .errors import Unavailable
from .events.dispatcher import Dispatcher
from .handlers.base import NotFoundHandler
from .hooks import PreCreateHook
from .handlers.chunk import ChunkHandler
from .handlers.direct import PartUrlHandler
from .handlers.files import FileHandler
from .handlers.ops import DrainingHandler, MetricsHandler, ReadyHandler
from .handlers.openapi import OpenAPIHandler
from .handlers.page import PageHandler
from .handlers.uploads import (CompleteHandler, HealthHandler, InitHandler, ListHandler,
                               StatusHandler, UploadHandler)
from .locks.base import Locks
from .logs import log_request
from .metrics import Metrics, TimedLocks
from .naming import ID_PATTERN
from .ratelimit import RateLimiter
from .recovery import publish_recorded_merges, return_interrupted_merges
from .service import UploadService
from .shutdown import Drain
from .storage.base import Storage
from .store.base import MetadataStore

log = logging.getLogger("uploader")
ROOT = Path(__file__).resolve().parent.parent
WEB_DIR = ROOT / "web"
TEMPLATES_DIR = ROOT / "templates"


def make_store(config: Config) -> MetadataStore:
    if config.store.backend == "mysql":
        from .store.mysql import MySQLStore
        return MySQLStore(config.store.mysql_dsn, pool_size=config.store.pool_size)
    from .store.sqlite import SQLiteStore
    return SQLiteStore(config.sqlite_path, synchronous_full=config.storage.fsync)


def make_storage(config: Config, executor: ThreadPoolExecutor) -> Storage:
    if config.storage.backend == "s3":
        from .storage.s3 import S3Storage
        return S3Storage(config.s3, config.data_dir, executor,
                         orphan_age=max(config.storage.stale_part_age, 3600.0))
    from .storage.local import LocalStorage
    return LocalStorage(config.data_dir, executor, fsync=config.storage.fsync,
                        incremental=incremental_merge(config), fold_nice=config.merge.fold_nice)


def incremental_merge(config: Config) -> bool:
    """The incremental merge lives in one process's memory: with several
    instances (Redis locks) chunks spread over all of them, no instance sees
    a contiguous run to fold, and one that folded a head start never learns
    that another merged the upload. There it is off; complete merges."""
    return config.merge.incremental and config.locks.backend == "memory"


def make_locks(config: Config) -> Locks:
    if config.locks.backend == "redis":
        from .locks.redis import RedisLocks
        return RedisLocks(config.locks.redis_url, key_prefix=config.locks.redis_prefix)
    from .locks.memory import MemoryLocks
    return MemoryLocks()


@dataclass
class Runtime:
    """The wired components of one server process and their lifecycle."""

    config: Config
    store: MetadataStore
    storage: Storage
    locks: Locks
    executor: ThreadPoolExecutor
    service: UploadService
    expirer: Expirer
    templates: jinja2.Environment
    dispatcher: Dispatcher
    auth_required: bool = False
    metrics: Metrics = field(default_factory=Metrics)
    # Requests in flight and cleanup tasks; shutdown.graceful_stop drains it.
    drain: Drain = field(default_factory=Drain)
    # Built from the config (a test may swap them before serving).
    authenticator: Authenticator = field(init=False)
    ratelimiter: RateLimiter = field(init=False)
    started: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.authenticator = Authenticator(self.config.auth)
        self.ratelimiter = RateLimiter(self.config)
        self.auth_required = self.authenticator.enabled

    async def start(self) -> None:
        await self._open_store()
        await self.storage.start()
        try:
            # Publish recorded merges before stray parts are swept: a staged
            # file of a completed upload is not a stray.
            published = await publish_recorded_merges(self.service)
            removed = await self.storage.recover(older_than=self.config.storage.stale_part_age)
            recovered = await return_interrupted_merges(self.service)
        except Unavailable as exc:
            # Redis or the database went away meanwhile: the sweep publishes
            # later, and a client's next complete re-merges an interrupted one.
            log.warning("recovery at start skipped: %s", exc.message)
            published = removed = recovered = 0
        if removed or recovered or published:
            log.info("recovery: published %d recorded merges, removed %d stray part files, "
                     "%d interrupted merges back to in_progress", published, removed, recovered)
        self.expirer.start()
        # Events left by a previous run (or another instance) go out now.
        self.dispatcher.start()
        self.started = True

    async def _open_store(self) -> None:
        """Wait for the database instead of dying: a fleet restarted during
        a database outage comes up by itself when it returns."""
        delay = 0.5
        while True:
            try:
                await self.store.open()
                return
            except Unavailable as exc:
                log.warning("waiting for the database at start (%s); retrying in %.0fs",
                            exc.message, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def stop(self) -> None:
        self.expirer.stop()
        # Aborts of cut chunks still deleting their .part files.
        await self.drain.wait_tasks()
        await self.service.shutdown()
        await self.dispatcher.stop()
        if self.service.pre_create is not None:
            await self.service.pre_create.close()
        await self.locks.close()
        await self.ratelimiter.close()
        await self.store.close()
        await self.storage.close()
        self.executor.shutdown(wait=True)
        self.started = False


def build_runtime(config: Config) -> Runtime:
    executor = ThreadPoolExecutor(config.storage.io_threads, thread_name_prefix="uploader-io")
    store = make_store(config)
    storage = make_storage(config, executor)
    locks = make_locks(config)
    metrics = Metrics()
    drain = Drain()
    metrics.in_flight.set_function(lambda: drain.active)
    # The service (and the sweep, through it) takes locks through a timer.
    service = UploadService(config, store, storage, TimedLocks(locks, metrics), executor,
                            metrics=metrics)
    templates = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
                                   autoescape=True)
    dispatcher = Dispatcher(config.events, config.webhooks, store, metrics)
    service.on_event = dispatcher.notify
    if config.hooks.pre_create_url:
        service.pre_create = PreCreateHook(config.hooks)
    return Runtime(config=config, store=store, storage=storage, locks=locks, executor=executor,
                   service=service, expirer=Expirer(config, service), templates=templates,
                   dispatcher=dispatcher, metrics=metrics, drain=drain)


class UploaderApplication(tornado.web.Application):
    """Routes every request to DrainingHandler (503) once shutdown began."""

    runtime: Runtime

    # The return type is Tornado's own (a private class) to match the override.
    def find_handler(self, request: tornado.httputil.HTTPServerRequest,
                     **kwargs: Any) -> "tornado.web._HandlerDelegate":
        if self.runtime.drain.draining:
            return self.get_handler_delegate(request, DrainingHandler,
                                             {"runtime": self.runtime})
        return super().find_handler(request, **kwargs)


def make_app(config: Config, runtime: Runtime | None = None) -> tornado.web.Application:
    """The Tornado application; ``app.runtime`` must be started before serving."""
    runtime = runtime or build_runtime(config)
    uid = f"({ID_PATTERN})"
    deps: dict[str, Any] = {"runtime": runtime}
    routes = [
        (r"/", PageHandler, deps),
        (r"/healthz", HealthHandler, deps),
        (r"/readyz", ReadyHandler, deps),
        (r"/metrics", MetricsHandler, deps),
        (r"/upload/init", InitHandler, deps),
        (rf"/upload/{uid}/chunk", ChunkHandler, deps),
        (rf"/upload/{uid}/chunk/(\d{{1,9}})/url", PartUrlHandler, deps),
        (rf"/upload/{uid}/status", StatusHandler, deps),
        (rf"/upload/{uid}/complete", CompleteHandler, deps),
        (rf"/upload/{uid}", UploadHandler, deps),
        (r"/uploads", ListHandler, deps),
        (rf"/files/{uid}", FileHandler, deps),
        (r"/openapi.json", OpenAPIHandler, deps),
    ]
    # Route labels for metrics: the URL patterns, never paths holding ids.
    labels: dict[type, str] = {handler: pattern.replace(uid, "{id}")
                               for pattern, handler, _ in routes}
    labels.update({tornado.web.StaticFileHandler: "/static/", NotFoundHandler: "unmatched",
                   DrainingHandler: "draining"})
    runtime.metrics.set_routes(labels)
    app = UploaderApplication(
        routes,
        static_path=str(WEB_DIR),
        static_url_prefix="/static/",
        default_handler_class=NotFoundHandler,
        default_handler_args=deps,
        compress_response=False,
        log_function=log_request,  # one access line per request, and request metrics
    )
    app.runtime = runtime  # type: ignore[attr-defined]
    return app


def make_server(app: tornado.web.Application, config: Config) -> tornado.httpserver.HTTPServer:
    """HTTP settings that matter for streaming: a small default body limit
    (chunk handlers raise it per request) and large socket reads; header and
    body timeouts and a cap on connections per address (connections.py)."""
    return make_guarded_server(app, config)
