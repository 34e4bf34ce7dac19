"""The wired parts of one server process, built from the config in one place.

``build_runtime`` chooses each backend by name, records what the storage can
do (``Features``) and wires the service, the merges, the sweep and the
request guards; ``Runtime.start``/``stop`` run their lifecycle. No module
globals, no singletons: a test builds as many runtimes as it likes.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import redis_keys
from .auth import Authenticator
from .cleanup import Expirer
from .config import Config
from .errors import Unavailable
from .events.dispatcher import Dispatcher
from .events.recorder import EventLog
from .features import Features
from .health import Health
from .hooks import PreCreateHook
from .locks.base import Locks
from .locks.names import UploadLocks
from .merging import Merges
from .metrics import Metrics, TimedLocks
from .ratelimit import RateLimiter
from .recovery import (publish_recorded_merges, remove_completed_chunks, remove_dead_merges,
                       return_interrupted_merges)
from .service import UploadService
from .shutdown import Drain
from .storage.base import Storage
from .store.base import MetadataStore
from .tus.service import TusService

if TYPE_CHECKING:  # the Redis client is imported only where the queue is on
    from .merge_queue import RedisMergeQueue

log = logging.getLogger("uploader")


def make_store(config: Config) -> MetadataStore:
    if config.store.backend == "mysql":
        from .store.mysql import MySQLStore
        return MySQLStore(config.store.mysql_dsn, pool_size=config.store.pool_size)
    from .store.sqlite import SQLiteStore
    # WAL + synchronous=NORMAL: a commit is ordered after the chunk's own
    # fdatasync and needs no flush of its own (docs/architecture.md, section 5).
    return SQLiteStore(config.sqlite_path, synchronous_full=False)


def incremental_merge(config: Config) -> bool:
    """The incremental merge lives in one process's memory: with several
    instances (shared locks) chunks spread over all of them, no instance sees
    a contiguous run to fold, and one that folded a head start never learns
    that another merged the upload. There it is off; complete merges."""
    return config.merge.incremental and config.locks.backend == "memory"


def make_storage(config: Config, executor: ThreadPoolExecutor) -> Storage:
    if config.storage.backend == "s3":
        from .storage.s3 import S3Storage
        return S3Storage(config.s3, config.data_dir, executor,
                         orphan_age=max(config.storage.stale_part_age, 3600.0))
    from .storage.local import LocalStorage
    return LocalStorage(config.data_dir, executor, fsync=config.storage.fsync,
                        incremental=incremental_merge(config), fold_nice=config.merge.fold_nice)


def backends_of(config: Config) -> dict[str, str]:
    """The backend behind each readiness check."""
    return {"database": config.store.backend, "locks": config.locks.backend,
            "storage": config.storage.backend}


def make_locks(config: Config) -> Locks:
    if config.locks.backend == "redis":
        from .locks.redis import RedisLocks
        return RedisLocks(config.locks.redis_url,
                          key_prefix=redis_keys.key_prefix(config.locks, redis_keys.LOCKS))
    if config.locks.backend == "mysql":
        from .locks.mysql import MySQLLocks
        return MySQLLocks(config.locks.mysql_dsn or config.store.mysql_dsn, ttl=config.locks.ttl,
                          pool_size=config.locks.mysql_pool_size)
    if config.locks.backend == "etcd":
        from .locks.etcd import EtcdLocks  # the etcd extra (checked at config load)
        return EtcdLocks(config.locks.etcd_endpoints, key_prefix=config.locks.etcd_prefix)
    from .locks.memory import MemoryLocks
    return MemoryLocks()


@dataclass
class Runtime:
    """Everything one server process wired together, and its lifecycle.
    Handlers see only what ``handlers.context.HandlerContext`` hands them."""

    config: Config
    store: MetadataStore
    storage: Storage
    locks: Locks
    executor: ThreadPoolExecutor
    features: Features
    merges: Merges
    service: UploadService
    expirer: Expirer
    health: Health
    metrics: Metrics
    dispatcher: Dispatcher
    # Requests in flight and cleanup tasks; shutdown.graceful_stop drains it.
    drain: Drain = field(default_factory=Drain)
    # Built from the config (a test may swap them before serving).
    authenticator: Authenticator = field(init=False)
    ratelimiter: RateLimiter = field(init=False)
    # The tus 1.0 / IETF draft endpoint's rules, on top of the service.
    tus: TusService = field(init=False)
    started: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.tus = TusService(self.service)
        self.authenticator = Authenticator(self.config.auth)
        self.ratelimiter = RateLimiter(self.config)

    async def start(self, *, sweep: bool = True) -> None:
        """Open the backends, repair what a crash left, start the timers.
        ``sweep`` False: no expiry sweep here (``uploader worker``)."""
        await self._open_store()
        await self.storage.start()
        try:
            # Publish recorded merges before stray parts are swept: a staged
            # file of a completed upload is not a stray. Interrupted merges go
            # back first: then their staged files are provably dead.
            published = await publish_recorded_merges(self.service)
            recovered = await return_interrupted_merges(self.service)
            dead = await remove_dead_merges(self.service, at_start=True)
            leftovers, _ = await remove_completed_chunks(
                self.service, await self.storage.temp_upload_ids())
            removed = await self.storage.recover(older_than=self.config.storage.stale_part_age)
        except Unavailable as exc:
            # Redis or the database went away meanwhile: the sweep publishes
            # later, and a client's next complete re-merges an interrupted one.
            log.warning("recovery at start skipped: %s", exc.message)
            published = removed = recovered = dead = 0
            leftovers = []
        if removed or recovered or published or dead or leftovers:
            log.info("recovery: published %d recorded merges, %d interrupted merges back to "
                     "in_progress, removed %d dead merge files, %d stray part files and the "
                     "chunks of %d completed uploads",
                     published, recovered, dead, removed, len(leftovers))
        if sweep:
            self.expirer.start()
        # Events left by a previous run (or another instance) go out now.
        self.dispatcher.start()
        self.merges.take_jobs_now()
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
        await self.merges.shutdown()
        await self.service.activity.stop()
        await self.dispatcher.stop()
        if self.service.pre_create is not None:
            await self.service.pre_create.close()
        await self.locks.close()
        await self.ratelimiter.close()
        await self.store.close()
        await self.storage.close()
        self.executor.shutdown(wait=True)
        self.started = False


def make_merge_queue(config: Config) -> RedisMergeQueue | None:
    if config.merge.queue != "redis":
        return None
    from .merge_queue import RedisMergeQueue
    # On locks.redis_url, whatever the lock backend: the stream needs Redis.
    stream = redis_keys.key_prefix(config.locks, redis_keys.MERGES)
    return RedisMergeQueue(config.locks.redis_url, stream, config.locks.ttl,
                           concurrency=config.merge.concurrency)


def build_service(config: Config, store: MetadataStore, storage: Storage, locks: Locks,
                  executor: ThreadPoolExecutor, metrics: Metrics, *,
                  worker: bool = False) -> UploadService:
    """The service and its merge saga over these backends (``service.features``
    and ``service.merges`` hang off it)."""
    features = Features.of(storage, incremental=incremental_merge(config))
    # Every upload lock goes through a timer (lock waits in /metrics).
    upload_locks = UploadLocks(TimedLocks(locks, metrics), config.locks.ttl)
    events = EventLog(config, features, metrics)
    # An `uploader worker` always merges; a serving instance unless
    # merge.workers is external.
    merges = Merges(config, store, storage, upload_locks, features, metrics, events,
                    queue=make_merge_queue(config),
                    take_jobs=worker or config.merge.workers == "embedded")
    service = UploadService(config, store, storage, upload_locks, merges, features, executor,
                            events)
    if config.hooks.pre_create_url:
        service.pre_create = PreCreateHook(config.hooks)
    return service


def build_runtime(config: Config, *, worker: bool = False) -> Runtime:
    """``worker``: for ``uploader worker``, which takes merge jobs whatever
    merge.workers says."""
    executor = ThreadPoolExecutor(config.storage.io_threads, thread_name_prefix="uploader-io")
    store = make_store(config)
    storage = make_storage(config, executor)
    locks = make_locks(config)
    metrics = Metrics()
    drain = Drain()
    metrics.in_flight.set_function(lambda: drain.active)
    service = build_service(config, store, storage, locks, executor, metrics, worker=worker)
    dispatcher = Dispatcher(config.events, config.webhooks, store, metrics)
    service.events.on_event = dispatcher.notify
    return Runtime(config=config, store=store, storage=storage, locks=locks, executor=executor,
                   features=service.features, merges=service.merges, service=service,
                   expirer=Expirer(config, service, metrics),
                   health=Health(store, locks, storage, metrics, backends=backends_of(config),
                                 merge_depth=service.merges.queue_depth),
                   metrics=metrics, drain=drain, dispatcher=dispatcher)
