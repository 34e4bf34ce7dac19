"""What a request costs beyond its answer (issue 21 item 2, issue 19): the
trips an init and a chunk PUT make to the database thread. Counted with
wrappers around the real calls; the figures themselves are bench/'s."""

from __future__ import annotations

from typing import Any

import pytest

from support import KiB, Api, md5
from uploader.models import ChunkRecord, Upload
from uploader.store.sqlite import SQLiteStore

CS = 64 * KiB


async def test_the_first_chunk_after_init_writes_no_activity_mark(api: Api, runtime,
                                                                   monkeypatch) -> None:
    """The init set updated_at to now: the first chunk's activity mark
    (an UPDATE per upload) is not needed within the marks' interval."""
    touched: list[Any] = []
    real = runtime.store.touch

    async def touch(ids: Any, *args: Any) -> Any:
        touched.append(list(ids))
        return await real(ids, *args)
    monkeypatch.setattr(runtime.store, "touch", touch)
    up = await api.init(2 * CS, CS)
    code, _ = await api.put_chunk(up["upload_id"], 0, b"a" * CS, md5(b"a" * CS))
    assert code == 200
    assert touched == []


@pytest.fixture
def sqlite_store(io_loop, tmp_path):  # type: ignore[no-untyped-def]
    store = SQLiteStore(tmp_path / "meta.db", synchronous_full=False)
    io_loop.run_sync(store.open)
    yield store
    io_loop.run_sync(store.close)


async def test_a_chunk_record_and_its_count_are_one_trip(sqlite_store: SQLiteStore,
                                                          monkeypatch) -> None:
    from uploader.models import IN_PROGRESS, utcnow
    from uploader.naming import new_upload_id

    now = utcnow()
    upload = Upload(upload_id=new_upload_id(), owner="o", filename="f", size=2 * CS,
                    chunk_size=CS, total_chunks=2, md5=None, status=IN_PROGRESS,
                    created_at=now, updated_at=now)
    await sqlite_store.create_upload(upload)
    db = sqlite_store.db
    trips: list[Any] = []
    real = db._execute

    async def execute(fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(fn)
        return await real(fn, *args, **kwargs)
    monkeypatch.setattr(db, "_execute", execute)
    assert await sqlite_store.record_chunk_counted(upload.upload_id,
                                                   ChunkRecord(1, CS, "0" * 32)) == 1
    assert len(trips) == 1
    assert await sqlite_store.record_chunk_counted(new_upload_id(),
                                                   ChunkRecord(0, CS, "0" * 32)) is None


async def test_statements_of_many_tasks_queue_at_once(sqlite_store: SQLiteStore) -> None:
    """With no transaction open, a statement does not wait for the one
    before it to come back to the event loop: all are queued in aiosqlite's
    thread together (under load the thread no longer idles between them)."""
    import asyncio
    import threading

    running, gate = threading.Event(), threading.Event()
    blocker = asyncio.ensure_future(sqlite_store._in_thread(
        lambda db: (running.set(), gate.wait(30))))
    await asyncio.to_thread(running.wait, 30)  # the thread is busy with it
    readers = [asyncio.ensure_future(sqlite_store.get_upload("0" * 32)) for _ in range(5)]
    await asyncio.sleep(0)  # let every task run up to its first wait
    queued = sqlite_store.db._tx.qsize()
    gate.set()
    assert await asyncio.gather(*readers) == [None] * 5
    await blocker
    assert queued == 5


async def test_a_statement_never_joins_another_tasks_open_transaction(
        sqlite_store: SQLiteStore) -> None:
    """A transaction of several trips holds the connection: a statement
    issued meanwhile runs after its rollback, not inside it."""
    import asyncio

    from uploader.models import IN_PROGRESS, utcnow
    from uploader.naming import new_upload_id

    now = utcnow()
    upload = Upload(upload_id=new_upload_id(), owner="o", filename="f", size=2 * CS,
                    chunk_size=CS, total_chunks=2, md5=None, status=IN_PROGRESS,
                    created_at=now, updated_at=now)
    await sqlite_store.create_upload(upload)
    began, write_issued = asyncio.Event(), asyncio.Event()

    async def doomed() -> None:
        async with sqlite_store._transaction() as db:
            await db.execute("DELETE FROM upload_chunks")
            began.set()
            await write_issued.wait()
            raise RuntimeError("rolled back")

    tx = asyncio.ensure_future(doomed())
    await began.wait()
    record = asyncio.ensure_future(sqlite_store.record_chunk(upload.upload_id,
                                                             ChunkRecord(0, CS, "0" * 32)))
    await asyncio.sleep(0)
    write_issued.set()
    with pytest.raises(RuntimeError):
        await tx
    assert await record
    assert [c.index for c in await sqlite_store.get_chunks(upload.upload_id)] == [0]
