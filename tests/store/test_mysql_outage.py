"""MySQLStore when the database is away, kills our connections, or a query is
cancelled: callers see Unavailable (never a raw driver error) and the pool
heals by itself."""

from __future__ import annotations

import asyncio
import logging
import uuid

import aiomysql
import pytest

from support import with_database
from uploader.errors import Unavailable
from uploader.models import ABORTED, IN_PROGRESS
from uploader.store.mysql import DatabaseMissing, MySQLStore, parse_dsn

from .test_conformance import chunk, new_upload


async def test_closed_port_is_unavailable(io_loop):
    store = MySQLStore("mysql://root@127.0.0.1:1/test", connect_timeout=2)
    try:
        with pytest.raises(Unavailable) as info:
            await store.get_upload(uuid.uuid4().hex)
        assert (info.value.status, info.value.retry_after) == (503, 2)
        assert "database unavailable" in info.value.message
        with pytest.raises(Unavailable):
            await store.record_chunk(uuid.uuid4().hex, chunk(0))
        with pytest.raises(Unavailable):
            await store.open()
    finally:
        await store.close()


async def test_missing_database_is_a_clear_error(io_loop, mysql_dsn):
    name = f"uploader_missing_{uuid.uuid4().hex[:12]}"
    store = MySQLStore(with_database(mysql_dsn, name))
    try:
        with pytest.raises(DatabaseMissing, match=name):
            await store.open()
    finally:
        await store.close()


async def _admin(dsn: str) -> aiomysql.Connection:
    params = parse_dsn(dsn)
    return await aiomysql.connect(host=params["host"], port=params["port"], user=params["user"],
                                  password=params["password"], db=params["db"], autocommit=True)


async def _connection_ids(admin: aiomysql.Connection, database: str) -> set[int]:
    async with admin.cursor() as cur:
        await cur.execute("SELECT id FROM information_schema.PROCESSLIST "
                          "WHERE db = %s AND id <> CONNECTION_ID()", (database,))
        return {row[0] for row in await cur.fetchall()}


async def _kill_store_connections(admin: aiomysql.Connection, database: str) -> None:
    ids = await _connection_ids(admin, database)
    assert ids, "the store holds no connection to kill"
    async with admin.cursor() as cur:
        for conn_id in ids:
            await cur.execute(f"KILL {int(conn_id)}")


async def _blocked_statement(admin: aiomysql.Connection, database: str, prefix: str,
                             not_ids: frozenset[int] = frozenset()) -> int:
    """The connection id running a statement starting with ``prefix`` (bounded poll)."""
    async with admin.cursor() as cur:
        for _ in range(500):
            await cur.execute("SELECT id FROM information_schema.PROCESSLIST "
                              "WHERE db = %s AND info LIKE %s", (database, prefix + "%"))
            ids = {row[0] for row in await cur.fetchall()} - not_ids
            if ids:
                return ids.pop()
            await asyncio.sleep(0.01)
    raise AssertionError(f"no {prefix!r} statement reached the server")


async def _hold_row(admin: aiomysql.Connection, database: str, upload_id: str) -> None:
    """Lock the upload's row so the store's statements on it wait in the server."""
    await admin.begin()
    async with admin.cursor() as cur:
        await cur.execute(f"SELECT status FROM `{database}`.uploads WHERE upload_id = %s "
                          f"FOR UPDATE", (upload_id,))


async def _at_most_one_unavailable(call):
    """The call, or, if it met the dead connection, the call once more."""
    try:
        return await call()
    except Unavailable:
        return await call()


async def test_recovers_after_connections_killed(io_loop, mysql_store, mysql_dsn):
    store = mysql_store
    upload = new_upload()
    await store.create_upload(upload)
    admin = await _admin(mysql_dsn)
    try:
        # A read after the kill: retried on a fresh connection, or at worst
        # one Unavailable.
        await _kill_store_connections(admin, store.database)
        got = await _at_most_one_unavailable(lambda: store.get_upload(upload.upload_id))
        assert got == upload

        # A non-idempotent write after the kill: Unavailable at most once, and
        # the write is then applied exactly once.
        await _kill_store_connections(admin, store.database)
        assert await _at_most_one_unavailable(
            lambda: store.begin_merge(upload.upload_id, [IN_PROGRESS, "merging"])) in (1, 2)
        assert (await store.get_upload(upload.upload_id)).status == "merging"

        await _kill_store_connections(admin, store.database)
        assert await _at_most_one_unavailable(
            lambda: store.set_status(upload.upload_id, ABORTED, ["merging", ABORTED]))
        assert (await store.get_upload(upload.upload_id)).status == ABORTED
    finally:
        admin.close()


async def test_cancelled_query_connection_is_not_reused(io_loop, mysql_store, mysql_dsn):
    """A query cancelled mid-flight must not leave its late reply on a pooled
    connection, where the next caller would read it as its own result."""
    store = mysql_store
    upload = new_upload()
    await store.create_upload(upload)
    admin = await _admin(mysql_dsn)
    try:
        await _hold_row(admin, store.database, upload.upload_id)
        task = asyncio.ensure_future(store.set_status(upload.upload_id, ABORTED, [IN_PROGRESS]))
        waiting = await _blocked_statement(admin, store.database, "UPDATE uploads")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await admin.rollback()  # the server now finishes (or drops) the UPDATE
        async with admin.cursor() as cur:
            for _ in range(500):  # bounded poll until that statement is done
                await cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                                  "WHERE id = %s AND info LIKE 'UPDATE uploads%%'", (waiting,))
                if (await cur.fetchone())[0] == 0:
                    break
                await asyncio.sleep(0.01)
        # Fresh connections answer correctly (a reused one would first read
        # the late UPDATE reply).
        got = await store.get_upload(upload.upload_id)
        assert got is not None and got.upload_id == upload.upload_id
        # Whether the server still applied the abandoned UPDATE is its choice;
        # what the store answers next must agree with the row either way.
        assert got.status in (IN_PROGRESS, ABORTED)
        assert await store.get_chunks(upload.upload_id) == []
        assert await store.record_chunk(upload.upload_id, chunk(0)) == (got.status == IN_PROGRESS)
        assert [u.upload_id for u in await store.list_uploads(upload.owner)] == [upload.upload_id]
    finally:
        admin.close()


async def test_connection_killed_mid_query(io_loop, mysql_store, mysql_dsn, caplog):
    """The connection dies under a running statement: idempotent work is
    retried once on a fresh connection; other work answers Unavailable (it
    may or may not have been applied) and the next call works."""
    caplog.set_level(logging.INFO, logger="uploader.store.mysql")
    store = mysql_store
    upload = new_upload()
    await store.create_upload(upload)
    admin = await _admin(mysql_dsn)
    try:
        await _hold_row(admin, store.database, upload.upload_id)
        task = asyncio.ensure_future(store.record_chunk(upload.upload_id, chunk(0)))
        first = await _blocked_statement(admin, store.database, "INSERT INTO upload_chunks")
        async with admin.cursor() as cur:
            await cur.execute(f"KILL {int(first)}")
        # The retry arrives on another connection and waits for the row too.
        await _blocked_statement(admin, store.database, "INSERT INTO upload_chunks",
                                 frozenset({first}))
        await admin.rollback()
        assert await task is True
        assert (await store.get_upload(upload.upload_id)).received == [0]
        assert any("retrying once" in r.getMessage() for r in caplog.records)

        await _hold_row(admin, store.database, upload.upload_id)
        task = asyncio.ensure_future(store.begin_merge(upload.upload_id, [IN_PROGRESS]))
        victim = await _blocked_statement(admin, store.database, "UPDATE uploads")
        async with admin.cursor() as cur:
            await cur.execute(f"KILL {int(victim)}")
        with pytest.raises(Unavailable):
            await task
        await admin.rollback()
        got = await store.get_upload(upload.upload_id)
        assert (got.status, got.merge_version) == (IN_PROGRESS, 0)  # killed before applying
        assert await store.begin_merge(upload.upload_id, [IN_PROGRESS]) == 1
    finally:
        admin.close()


async def test_ping_closed_port_is_unavailable(io_loop):
    store = MySQLStore("mysql://root@127.0.0.1:1/test", connect_timeout=2)
    try:
        with pytest.raises(Unavailable):
            await store.ping()
    finally:
        await store.close()
