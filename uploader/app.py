"""Build everything from the config in one place (ARCHITECTURE.md section 1)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import tornado.httpserver
import tornado.web

from .cleanup import Expirer
from .config import Config
from .handlers.base import NotFoundHandler
from .handlers.chunk import ChunkHandler
from .handlers.files import FileHandler
from .handlers.page import PageHandler
from .handlers.uploads import (CompleteHandler, HealthHandler, InitHandler, ListHandler,
                               StatusHandler, UploadHandler)
from .locks.base import Locks
from .naming import ID_PATTERN
from .service import UploadService
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
    from .storage.local import LocalStorage
    return LocalStorage(config.data_dir, executor, fsync=config.storage.fsync,
                        incremental=config.merge.incremental, fold_nice=config.merge.fold_nice)


def make_locks(config: Config) -> Locks:
    if config.locks.backend == "redis":
        from .locks.redis import RedisLocks
        return RedisLocks(config.locks.redis_url)
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
    auth_required: bool = False
    started: bool = field(default=False, init=False)

    async def start(self) -> None:
        await self.store.open()
        await self.storage.start()
        removed = await self.storage.recover(older_than=self.config.storage.stale_part_age)
        recovered = await self.service.recover()
        if removed or recovered:
            log.info("recovery: removed %d stray part files, %d interrupted merges back to "
                     "in_progress", removed, recovered)
        self.expirer.start()
        self.started = True

    async def stop(self) -> None:
        self.expirer.stop()
        await self.service.shutdown()
        await self.locks.close()
        await self.store.close()
        await self.storage.close()
        self.executor.shutdown(wait=True)
        self.started = False


def build_runtime(config: Config) -> Runtime:
    executor = ThreadPoolExecutor(config.storage.io_threads, thread_name_prefix="uploader-io")
    store = make_store(config)
    storage = make_storage(config, executor)
    locks = make_locks(config)
    service = UploadService(config, store, storage, locks, executor)
    templates = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
                                   autoescape=True)
    return Runtime(config=config, store=store, storage=storage, locks=locks, executor=executor,
                   service=service, expirer=Expirer(config, service), templates=templates)


def make_app(config: Config, runtime: Runtime | None = None) -> tornado.web.Application:
    """The Tornado application; ``app.runtime`` must be started before serving."""
    runtime = runtime or build_runtime(config)
    uid = f"({ID_PATTERN})"
    deps: dict[str, Any] = {"runtime": runtime}
    routes = [
        (r"/", PageHandler, deps),
        (r"/healthz", HealthHandler, deps),
        (r"/upload/init", InitHandler, deps),
        (rf"/upload/{uid}/chunk", ChunkHandler, deps),
        (rf"/upload/{uid}/status", StatusHandler, deps),
        (rf"/upload/{uid}/complete", CompleteHandler, deps),
        (rf"/upload/{uid}", UploadHandler, deps),
        (r"/uploads", ListHandler, deps),
        (rf"/files/{uid}", FileHandler, deps),
    ]
    app = tornado.web.Application(
        routes,
        static_path=str(WEB_DIR),
        static_url_prefix="/static/",
        default_handler_class=NotFoundHandler,
        default_handler_args=deps,
        compress_response=False,
    )
    app.runtime = runtime  # type: ignore[attr-defined]
    return app


def make_server(app: tornado.web.Application, config: Config) -> tornado.httpserver.HTTPServer:
    """HTTP settings that matter for streaming: a small default body limit
    (chunk handlers raise it per request) and large socket reads."""
    server = config.server
    return tornado.httpserver.HTTPServer(
        app,
        xheaders=server.xheaders,
        max_body_size=server.max_json_body,
        chunk_size=server.read_chunk_size,
        idle_connection_timeout=server.idle_connection_timeout,
        decompress_request=False,
    )
