"""Expiry (uploader/cleanup.py) on both metadata stores, SQLite and MariaDB.

Uploads are aged by moving ``updated_at`` (and chunk ``received_at``) back
directly in the database, as if they had been idle that long.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import pymysql
import pytest
import redis
import yaml

from support import MySQLServer, require_redis, run_uploader
from uploader.runtime import Runtime, build_runtime, build_service
from uploader.cleanup import Expirer
from uploader.config import Config, load_config
from uploader.locks.redis import RedisLocks
from uploader.models import COMPLETED, FAILED, IN_PROGRESS, MERGING, utcnow
from uploader.service import UploadService
from uploader.store.mysql import parse_dsn
from uploader.store.rows import ts_to_text
from uploader.store.sqlite import SQLiteStore

KiB = 1 << 10
CS = 4 * KiB
OWNER = "local"
REDIS_URL = os.environ.get("TEST_UPLOADER_REDIS_URL", "redis://127.0.0.1:6379/13")
LONG_AGO = 30 * 24 * 3600  # far past the test TTL of one hour


def make_config(data_dir: Path, store: dict[str, Any], **expiry: Any) -> Config:
    return load_config(None, env={}, overrides={
        "storage": {"data_dir": str(data_dir), "fsync": False,
                    # A failed removal left "aborted" is retried at the next sweep.
                    "stale_part_age": 0},
        "store": store,
        "limits": {"chunk_size_min": KiB},
        "expiry": {"enabled": False, "ttl": 3600, **expiry},
    })


@pytest.fixture(params=["sqlite", "mysql"])
def store_settings(request, tmp_path) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"backend": "sqlite", "sqlite_path": str(tmp_path / "meta.db")}
    server: MySQLServer = request.getfixturevalue("mysql_server")
    return {"backend": "mysql", "mysql_dsn": server.create_database(), "pool_size": 4}


@pytest.fixture
def expiry_settings() -> dict[str, Any]:
    return {}


@pytest.fixture
def runtime(io_loop, tmp_path, store_settings, expiry_settings) -> Iterator[Runtime]:
    rt = build_runtime(make_config(tmp_path / "data", store_settings, **expiry_settings))
    io_loop.run_sync(rt.start)
    yield rt
    io_loop.run_sync(rt.stop)


@pytest.fixture
def redis_prefix(io_loop) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    client = redis.Redis.from_url(require_redis(REDIS_URL), socket_connect_timeout=3,
                                  socket_timeout=3)
    prefix = f"uploader-test:{uuid.uuid4().hex}:"
    yield prefix
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()


# -- helpers -----------------------------------------------------------------

async def new_upload(service: UploadService, chunks: int = 2, total: int = 3) -> str:
    up = await service.create(OWNER, filename="a.bin", size=total * CS, chunk_size=CS)
    for index in range(chunks):
        await new_chunk(service, up.upload_id, index)
    return up.upload_id


async def new_chunk(service: UploadService, upload_id: str, index: int) -> None:
    """One chunk through the service, as the chunk handler feeds it."""
    receiver = await service.start_chunk(OWNER, upload_id, index, None, CS)
    waiting = receiver.feed(os.urandom(CS))
    if waiting is not None:
        await waiting
    await service.finish_chunk(receiver)


async def completed_upload(service: UploadService) -> str:
    upload_id = await new_upload(service, chunks=2, total=2)
    upload, finished = await service.complete(OWNER, upload_id, None)
    assert finished and upload.status == COMPLETED
    return upload_id


def run_sql(runtime: Runtime, sql: str, params: tuple) -> None:
    """Straight into the database, behind the store's back."""
    store = runtime.store
    if isinstance(store, SQLiteStore):
        import sqlite3
        with sqlite3.connect(store.path) as conn:
            conn.execute(sql.replace("%s", "?"), params)
        return
    p = parse_dsn(runtime.config.store.mysql_dsn)
    with pymysql.connect(host=p["host"], port=p["port"], user=p["user"], password=p["password"],
                         database=p["db"], autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql, params)


def stamp(runtime: Runtime, ts: datetime) -> Any:
    return ts_to_text(ts) if isinstance(runtime.store, SQLiteStore) else ts


def age(runtime: Runtime, upload_id: str, seconds: float = LONG_AGO, *,
        chunks: bool = True, status: str | None = None) -> None:
    past = stamp(runtime, utcnow() - timedelta(seconds=seconds))
    run_sql(runtime, "UPDATE uploads SET updated_at = %s WHERE upload_id = %s", (past, upload_id))
    if chunks:
        run_sql(runtime, "UPDATE upload_chunks SET received_at = %s WHERE upload_id = %s",
                (past, upload_id))
    if status:
        run_sql(runtime, "UPDATE uploads SET status = %s WHERE upload_id = %s",
                (status, upload_id))


def tmp_dir(runtime: Runtime, upload_id: str) -> Path:
    return runtime.config.data_dir / "tmp" / upload_id


def make_orphan(runtime: Runtime) -> str:
    orphan = uuid.uuid4().hex
    tmp_dir(runtime, orphan).mkdir(parents=True)
    (tmp_dir(runtime, orphan) / "chunk_0").write_bytes(b"x" * CS)
    return orphan


class StorageWrapper:
    """A fake only in what it must be: root ignores permissions, so a real
    deletion cannot be made to fail; this raises for one id (or waits on an
    event) and delegates everything else to the real LocalStorage."""

    def __init__(self, real: Any, fail_id: str = "", block_id: str = "") -> None:
        self.real, self.fail_id, self.block_id = real, fail_id, block_id
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def delete_chunks(self, upload_id: str) -> None:
        if upload_id == self.fail_id:
            raise OSError(5, "Input/output error (injected)")
        if upload_id == self.block_id:
            self.entered.set()
            await self.release.wait()
        await self.real.delete_chunks(upload_id)

    async def delete_upload(self, upload: Any) -> None:
        await self.delete_chunks(upload.upload_id)  # the injected fault or wait
        await self.real.delete_upload(upload)


# -- tests -------------------------------------------------------------------

async def test_sweep_removes_idle_uploads_and_orphans_only(runtime: Runtime) -> None:
    service = runtime.service
    idle = await new_upload(service)
    idle_failed = await new_upload(service)
    fresh = await new_upload(service)
    recent_chunk = await new_upload(service)  # row idle, but a chunk came in lately
    merging = await new_upload(service, chunks=3)
    done = await completed_upload(service)
    age(runtime, idle)
    age(runtime, idle_failed, status=FAILED)
    age(runtime, recent_chunk, chunks=False)
    age(runtime, merging, status=MERGING)
    age(runtime, done)
    orphan = make_orphan(runtime)
    report = await runtime.expirer.sweep()
    assert sorted(report.expired) == sorted([idle, idle_failed])
    assert report.orphans == [orphan] and report.failed == [] and not report.skipped
    for gone in (idle, idle_failed, orphan):
        assert await service.store.get_upload(gone) is None
        assert not tmp_dir(runtime, gone).exists()
    for kept, status in ((fresh, IN_PROGRESS), (recent_chunk, IN_PROGRESS),
                         (merging, MERGING), (done, COMPLETED)):
        upload = await service.store.get_upload(kept)
        assert upload is not None and upload.status == status
    for kept in (fresh, recent_chunk, merging):
        assert sorted(p.name for p in tmp_dir(runtime, kept).iterdir()) == ["claims", "data"]
    completed = await service.store.get_upload(done)
    assert await runtime.storage.file_size(completed.storage_key) == 2 * CS
    again = await runtime.expirer.sweep()
    assert (again.expired, again.orphans, again.failed) == ([], [], [])


async def test_one_failing_item_is_logged_and_skipped(runtime: Runtime, caplog) -> None:
    caplog.set_level(logging.INFO, logger="uploader.expiry")
    service = runtime.service
    bad, good = await new_upload(service), await new_upload(service)
    age(runtime, bad)
    age(runtime, good)
    service.storage = StorageWrapper(runtime.storage, fail_id=bad)
    report = await runtime.expirer.sweep()
    assert report.expired == [good] and report.failed == [bad]
    assert f"could not expire upload {bad}" in caplog.text
    assert "Input/output error (injected)" in caplog.text
    assert await service.store.get_upload(good) is None
    assert tmp_dir(runtime, bad).exists()  # its bytes are still there, and so is its row
    assert (await service.store.get_upload(bad)).status == "aborted"
    service.storage = runtime.storage  # the fault is gone: the next sweep finishes the job
    retry = await runtime.expirer.sweep()
    assert retry.expired == [bad] and retry.failed == []
    assert await service.store.get_upload(bad) is None and not tmp_dir(runtime, bad).exists()


async def test_only_one_instance_sweeps_at_a_time(runtime: Runtime, redis_prefix: str) -> None:
    """Two "instances": one store and data_dir, each its own Redis client."""
    cfg = runtime.config
    locks = [RedisLocks(REDIS_URL, key_prefix=redis_prefix) for _ in range(2)]
    slow = StorageWrapper(runtime.storage)
    metrics = runtime.metrics
    a = Expirer(cfg, build_service(cfg, runtime.store, slow, locks[0], runtime.executor,
                                   metrics), metrics)
    b = Expirer(cfg, build_service(cfg, runtime.store, runtime.storage, locks[1],
                                   runtime.executor, metrics), metrics)
    try:
        upload_id = await new_upload(runtime.service)
        age(runtime, upload_id)
        slow.block_id = upload_id
        first = asyncio.ensure_future(a.sweep())
        await asyncio.wait_for(slow.entered.wait(), 10)  # a is inside its sweep
        second = await b.sweep()
        assert second.skipped and second.expired == []
        assert second.summary() == "another instance is sweeping; nothing done"
        slow.release.set()
        report = await asyncio.wait_for(first, 10)
        assert report.expired == [upload_id] and not report.skipped
        assert not (await b.sweep()).skipped  # released: the next one may sweep
    finally:
        for lk in locks:
            await lk.close()


async def test_expires_at_is_last_activity_plus_ttl(runtime: Runtime) -> None:
    service = runtime.service
    runtime.config.expiry.enabled = True
    ttl = timedelta(seconds=runtime.config.expiry.ttl)

    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.rstrip("Z"))

    upload_id = await new_upload(service, chunks=0)
    row = await service.store.get_upload(upload_id)
    doc = service.to_json(row)
    assert parse(doc["expires_at"]) == row.updated_at + ttl
    await new_chunk(service, upload_id, 1)
    row = await service.store.get_upload(upload_id)
    [chunk] = await service.store.get_chunks(upload_id)
    assert chunk.received_at >= row.updated_at
    assert parse(service.to_json(row)["expires_at"]) == chunk.received_at + ttl
    age(runtime, upload_id, 600)  # both moved back ten minutes: so does expires_at
    row = await service.store.get_upload(upload_id)
    assert parse(service.to_json(row)["expires_at"]) == row.last_activity + ttl
    assert row.last_activity < utcnow() - timedelta(seconds=599)
    done = await completed_upload(service)
    assert service.to_json(await service.store.get_upload(done))["expires_at"] is None


@pytest.mark.parametrize("expiry_settings", [{"enabled": True, "interval": 123,
                                              "jitter": 0.25}])
async def test_timer_has_interval_and_jitter_and_sweeps(runtime: Runtime, caplog) -> None:
    caplog.set_level(logging.INFO, logger="uploader.expiry")
    timer = runtime.expirer.timer  # Runtime.start() started it
    assert timer is not None and timer.is_running()
    assert (timer.callback_time, timer.jitter) == (123_000, 0.25)
    upload_id = await new_upload(runtime.service)
    age(runtime, upload_id)
    await timer.callback()  # what the timer runs when it fires
    assert await runtime.service.store.get_upload(upload_id) is None
    assert "expiry sweep: expired 1 uploads" in caplog.text
    runtime.expirer.stop()
    assert runtime.expirer.timer is None and not timer.is_running()


async def test_cleanup_command_prints_what_it_removed(runtime: Runtime, tmp_path) -> None:
    service = runtime.service
    idle, fresh = await new_upload(service), await new_upload(service)
    age(runtime, idle)
    orphan = make_orphan(runtime)
    cfg = runtime.config
    path = tmp_path / "cleanup.yaml"
    path.write_text(yaml.safe_dump({
        "storage": {"data_dir": str(cfg.data_dir), "fsync": False},
        "store": {"backend": cfg.store.backend, "sqlite_path": cfg.store.sqlite_path,
                  "mysql_dsn": cfg.store.mysql_dsn},
        "expiry": {"ttl": cfg.expiry.ttl},
    }))
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as pool:  # keep the loop free while the command runs
        proc = await loop.run_in_executor(pool, lambda: run_uploader(
            "cleanup", "--config", str(path), cwd=tmp_path, timeout=60))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert f"expired {idle}" in lines and f"orphan {orphan}" in lines
    assert lines[-1].startswith("expired 1 uploads, removed 1 orphan folders"), proc.stdout
    assert await service.store.get_upload(idle) is None
    assert (await service.store.get_upload(fresh)).status == IN_PROGRESS
    assert not tmp_dir(runtime, orphan).exists()


async def test_orphan_that_cannot_be_removed_is_reported_not_hidden(runtime: Runtime,
                                                                    caplog) -> None:
    """A real failure, no fake: a plain file where an upload folder should be
    cannot be removed as a folder. It is logged and counted as failed, not
    reported as removed, and the other orphans still go."""
    caplog.set_level(logging.INFO, logger="uploader.expiry")
    odd = uuid.uuid4().hex
    (runtime.config.data_dir / "tmp" / odd).write_bytes(b"not a folder")
    orphan = make_orphan(runtime)
    report = await runtime.expirer.sweep()
    assert report.orphans == [orphan] and report.failed == [odd]
    assert f"could not remove orphan folder {odd}" in caplog.text


async def completed_with_leftover_chunks(runtime: Runtime) -> str:
    """A completed upload whose published file sits beside its temp chunks:
    what a process killed between ``publish`` and ``delete_chunks`` leaves
    (found by the chaos run, seed 6 with etcd). The kill cannot be timed to
    fall between those two calls, so the merge is steered there: the chunk
    removal fails (a fault injected by StorageWrapper, as an EIO would), the
    path the merge already takes, leaving exactly the crash's state."""
    service = runtime.service
    upload_id = await new_upload(service, chunks=2, total=2)
    service.merges.storage = StorageWrapper(runtime.storage, fail_id=upload_id)
    try:
        upload, finished = await service.complete(OWNER, upload_id, None)
    finally:
        service.merges.storage = runtime.storage
    assert finished and upload.status == COMPLETED
    assert await runtime.storage.file_size(upload.storage_key) == 2 * CS
    assert sorted(p.name for p in tmp_dir(runtime, upload_id).iterdir()) == \
        ["claims", "data"]
    return upload_id


async def test_sweep_removes_leftover_chunks_of_a_completed_upload(runtime: Runtime) -> None:
    service = runtime.service
    done = await completed_with_leftover_chunks(runtime)
    running = await new_upload(service)  # its chunks stay
    report = await runtime.expirer.sweep()
    assert report.orphans == [done] and report.failed == [] and report.expired == []
    assert not tmp_dir(runtime, done).exists()
    assert sorted(p.name for p in tmp_dir(runtime, running).iterdir()) == ["claims", "data"]
    upload = await service.store.get_upload(done)
    assert upload.status == COMPLETED
    assert await runtime.storage.file_size(upload.storage_key) == 2 * CS


async def test_sweep_keeps_chunks_of_a_completed_upload_without_its_file(
        runtime: Runtime) -> None:
    """A completed row whose file is gone: the chunks may be all that is left."""
    done = await completed_with_leftover_chunks(runtime)
    upload = await runtime.service.store.get_upload(done)
    (runtime.config.data_dir / upload.storage_key).unlink()
    report = await runtime.expirer.sweep()
    assert report.orphans == [] and report.failed == []
    assert sorted(p.name for p in tmp_dir(runtime, done).iterdir()) == ["claims", "data"]


async def test_restart_removes_leftover_chunks_of_a_completed_upload(
        runtime: Runtime, caplog) -> None:
    caplog.set_level(logging.INFO, logger="uploader")
    done = await completed_with_leftover_chunks(runtime)
    await runtime.stop()
    again = build_runtime(runtime.config)  # expiry is off: only recovery at start acts
    await again.start()
    try:
        assert not tmp_dir(runtime, done).exists()
        assert "the chunks of 1 completed uploads" in caplog.text
        upload = await again.service.store.get_upload(done)
        assert upload.status == COMPLETED
        assert await again.storage.file_size(upload.storage_key) == 2 * CS
    finally:
        await again.stop()
