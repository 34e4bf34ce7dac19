"""The shared metadata store: MySQL/MariaDB (connections and their failure
rules: ``mysql_pool.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

import aiomysql

from ..errors import Unavailable
from ..event_model import Event
from ..models import IN_PROGRESS, ChunkRecord, Upload, utcnow
from .dsn import parse_dsn
from .mysql_pool import DatabaseMissing, MySQLPool, QuietCursor
from .outbox import OutboxQueries, Tx
from .rows import dump_error, upload_from_row, upload_params
from .base import Admit
from .schema import ALL_TOTALS, MYSQL_STEPS, OWNER_TOTALS, UPLOAD_COLUMNS
from .shared import SharedQueries

__all__ = ["DatabaseMissing", "MySQLStore", "parse_dsn"]

MIGRATE_LOCK = "uploader_migrate"
MIGRATE_LOCK_WAIT = 30  # seconds GET_LOCK waits for another instance's migration

T = TypeVar("T")


class _MySQLTx:
    def __init__(self, cur: aiomysql.Cursor) -> None:
        self.cur = cur

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(await self.cur.execute(sql, params))

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        await self.cur.execute(sql, params)
        return list(await self.cur.fetchall())


class MySQLStore(SharedQueries, OutboxQueries):
    MARK = "%s"
    # "=" ignores trailing spaces under PAD SPACE collations (utf8mb4_bin in
    # MariaDB and MySQL 8): the first test uses the index, the second is exact.
    VALUE_MATCH = "value = %s AND CAST(value AS BINARY) = CAST(%s AS BINARY)"

    def __init__(self, dsn: str, pool_size: int = 10, *, connect_timeout: float = 5.0,
                 query_timeout: float = 30.0) -> None:
        self.db = MySQLPool(dsn, pool_size, connect_timeout=connect_timeout,
                            query_timeout=query_timeout)
        self.database = self.db.database
        self._run = self.db.run

    async def open(self) -> None:
        await self.migrate()

    async def close(self) -> None:
        await self.db.close()

    async def ping(self, timeout: float = 5.0) -> None:
        await self.db.ping(timeout)

    # -- schema ------------------------------------------------------------

    async def migrate(self) -> int:
        async def work(cur: aiomysql.Cursor) -> int:
            # A named lock serialises instances starting at once; it belongs
            # to the session, so a crash or a closed connection frees it.
            await cur.execute("SELECT GET_LOCK(%s, %s)", (MIGRATE_LOCK, MIGRATE_LOCK_WAIT))
            (got,) = await cur.fetchone()
            if got != 1:
                raise Unavailable("schema migration lock is busy")
            try:
                await cur.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                                  "version INT NOT NULL PRIMARY KEY) ENGINE=InnoDB")
                await cur.execute("SELECT MAX(version) FROM schema_version")
                current = (await cur.fetchone())[0] or 0
                # DDL commits implicitly in MySQL, so a step is not atomic;
                # steps use IF NOT EXISTS and can be re-run after a crash.
                for number, step in enumerate(MYSQL_STEPS, start=1):
                    if number <= current:
                        continue
                    for statement in step:
                        await cur.execute(statement)
                    await cur.execute("INSERT INTO schema_version (version) VALUES (%s)",
                                      (number,))
                    current = number
            except BaseException:
                # Never hand a connection holding the named lock back to the pool.
                cur.connection.close()
                raise
            await cur.execute("SELECT RELEASE_LOCK(%s)", (MIGRATE_LOCK,))
            await cur.fetchall()
            return current

        return await self._run(work, cursor_class=QuietCursor,
                               timeout=MIGRATE_LOCK_WAIT + self.db.query_timeout)

    # -- helpers -----------------------------------------------------------

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        async def work(cur: aiomysql.Cursor) -> list[tuple]:
            await cur.execute(sql, params)
            return list(await cur.fetchall())
        return await self._run(work, idempotent=True)

    async def _write(self, sql: str, params: Sequence[Any] = (), *,
                     idempotent: bool = False) -> int:
        async def work(cur: aiomysql.Cursor) -> int:
            return await cur.execute(sql, params)
        return await self._run(work, idempotent=idempotent)

    @staticmethod
    async def _fill_received(cur: aiomysql.Cursor, uploads: list[Upload]) -> list[Upload]:
        """Fill ``received``/``last_chunk_at`` of many uploads in one query."""
        if not uploads:
            return uploads
        by_id = {u.upload_id: u for u in uploads}
        await cur.execute(f"SELECT upload_id, chunk_index, received_at FROM upload_chunks "
                          f"WHERE upload_id IN ({_marks(len(by_id))}) "
                          f"ORDER BY upload_id, chunk_index", list(by_id))
        for upload_id, index, received_at in await cur.fetchall():
            upload = by_id[upload_id]
            upload.received.append(index)
            if upload.last_chunk_at is None or received_at > upload.last_chunk_at:
                upload.last_chunk_at = received_at
        return uploads

    # -- uploads -----------------------------------------------------------

    async def _atomic(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        async def run(cur: aiomysql.Cursor) -> T:
            return await work(_MySQLTx(cur))
        return await self._run(run, transaction=True)

    async def create_upload(self, upload: Upload, event: Event | None = None, *,
                            admit: Admit | None = None) -> None:
        async def work(cur: aiomysql.Cursor) -> None:
            params = upload_params(upload)
            await cur.execute(f"INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES "
                              f"({_marks(len(params))})", params)
            if admit is not None:
                # The trigger has counted the row and holds the owner's counter
                # row locked until COMMIT: the owner's other inits wait here,
                # so each sees the ones before it. A locking read: the newest
                # committed value, not this transaction's snapshot. Everyone's
                # total is read unlocked: the free-space reserve is a margin.
                await cur.execute(OWNER_TOTALS.replace("?", "%s") + " FOR UPDATE",
                                  (upload.owner,))
                row = await cur.fetchone()
                await cur.execute(ALL_TOTALS)
                everyone = await cur.fetchone()
                try:
                    admit(*((int(row[0]), int(row[1])) if row else (0, 0)), int(everyone[1]))
                except BaseException:
                    # Rolled back here, the connection goes back to the pool.
                    await cur.connection.rollback()
                    raise
            if upload.metadata:
                await cur.executemany(*self._metadata_rows(upload))
            if event is not None:
                await self._insert_event(_MySQLTx(cur), event)
        await self._run(work, transaction=True)

    async def get_upload(self, upload_id: str, *, with_chunks: bool = True) -> Upload | None:
        async def work(cur: aiomysql.Cursor) -> Upload | None:
            await cur.execute(f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE upload_id = %s",
                              (upload_id,))
            row = await cur.fetchone()
            if row is None:
                return None
            upload = upload_from_row(row)
            if not with_chunks:
                return upload
            # One row instead of one per chunk (PyMySQL parses rows in Python).
            await cur.execute("SELECT GROUP_CONCAT(chunk_index), MAX(received_at), COUNT(*) "
                              "FROM upload_chunks WHERE upload_id = %s", (upload_id,))
            joined, upload.last_chunk_at, count = await cur.fetchone()
            if isinstance(joined, bytes):
                joined = joined.decode()
            upload.received = sorted(map(int, joined.split(","))) if joined else []
            if len(upload.received) != count:  # cut by group_concat_max_len
                upload.received, upload.last_chunk_at = [], None
                return (await self._fill_received(cur, [upload]))[0]
            return upload
        return await self._run(work, idempotent=True)

    async def list_uploads(self, owner: str, *, status: str | None = None,
                           filename: str | None = None, limit: int = 100,
                           metadata: Mapping[str, str] | None = None,
                           before: tuple[datetime, str] | None = None) -> list[Upload]:
        sql, params = self._list_sql(owner, status, filename, limit, metadata, before)

        async def work(cur: aiomysql.Cursor) -> list[Upload]:
            await cur.execute(sql, params)
            uploads = [upload_from_row(r) for r in await cur.fetchall()]
            return await self._fill_received(cur, uploads)
        return await self._run(work, idempotent=True)

    async def get_chunks(self, upload_id: str) -> list[ChunkRecord]:
        rows = await self._all("SELECT chunk_index, size, md5, received_at FROM upload_chunks "
                               "WHERE upload_id = %s ORDER BY chunk_index", (upload_id,))
        return [ChunkRecord(r[0], r[1], r[2], r[3]) for r in rows]

    async def record_chunk(self, upload_id: str, chunk: ChunkRecord) -> bool:
        # One statement: the status check and the upsert cannot be split by a
        # merge starting in between (the SELECT share-locks the uploads row).
        # Re-running it is harmless, hence idempotent.
        count = await self._write(
            _RECORD_CHUNK,
            (chunk.index, chunk.size, chunk.md5, chunk.received_at, upload_id, IN_PROGRESS),
            idempotent=True)
        return count > 0

    async def record_chunk_counted(self, upload_id: str, chunk: ChunkRecord) -> int | None:
        async def work(cur: aiomysql.Cursor) -> int | None:
            # Both statements on one pooled connection: one acquire, and the
            # count (a primary-key range count) right behind the upsert.
            if not await cur.execute(_RECORD_CHUNK, (
                    chunk.index, chunk.size, chunk.md5, chunk.received_at, upload_id,
                    IN_PROGRESS)):
                return None
            await cur.execute("SELECT COUNT(*) FROM upload_chunks WHERE upload_id = %s",
                              (upload_id,))
            return int((await cur.fetchone())[0])
        return await self._run(work, idempotent=True)

    async def count_chunks(self, upload_id: str) -> int:
        rows = await self._all("SELECT COUNT(*) FROM upload_chunks WHERE upload_id = %s",
                               (upload_id,))
        return int(rows[0][0])

    async def delete_chunk(self, upload_id: str, index: int) -> None:
        await self._write("DELETE FROM upload_chunks WHERE upload_id = %s AND chunk_index = %s",
                          (upload_id, index), idempotent=True)

    async def begin_merge(self, upload_id: str, from_statuses: Sequence[str]) -> int | None:
        if not from_statuses:
            return None

        async def work(cur: aiomysql.Cursor) -> int | None:
            count = await cur.execute(
                f"UPDATE uploads SET status = 'merging', merge_version = merge_version + 1, "
                f"updated_at = %s WHERE upload_id = %s AND status IN ({_marks(len(from_statuses))})",
                (utcnow(), upload_id, *from_statuses))
            if not count:
                return None
            # Same transaction: reads our own bump while holding the row lock.
            await cur.execute("SELECT merge_version FROM uploads WHERE upload_id = %s",
                              (upload_id,))
            row = await cur.fetchone()
            return int(row[0]) if row else None
        return await self._run(work, transaction=True)

    async def _change(self, sql: str, params: Sequence[Any], event: Event | None) -> bool:
        """One conditional UPDATE and, if it applied, its event: together."""
        if event is None:
            return await self._write(sql, params) > 0

        async def work(cur: aiomysql.Cursor) -> bool:
            if not await cur.execute(sql, params):
                return False
            await self._insert_event(_MySQLTx(cur), event)
            return True
        return await self._run(work, transaction=True)

    async def finish_merge(self, upload_id: str, version: int, *, status: str,
                           md5: str | None = None, storage_key: str | None = None,
                           error: dict | None = None, event: Event | None = None,
                           at: datetime | None = None, verified: str | None = None) -> bool:
        return await self._change(
            "UPDATE uploads SET status = %s, md5 = COALESCE(%s, md5), storage_key = %s, "
            "last_error = %s, updated_at = %s, verified = %s "
            "WHERE upload_id = %s AND merge_version = %s AND status = 'merging'",
            (status, md5, storage_key, dump_error(error), at or utcnow(), verified, upload_id,
             version), event)

    async def set_status(self, upload_id: str, status: str,
                         from_statuses: Sequence[str], event: Event | None = None,
                         at: datetime | None = None) -> bool:
        if not from_statuses:
            return False
        return await self._change(
            f"UPDATE uploads SET status = %s, updated_at = %s WHERE upload_id = %s "
            f"AND status IN ({_marks(len(from_statuses))})",
            (status, at or utcnow(), upload_id, *from_statuses), event)

    async def delete_upload(self, upload_id: str) -> None:
        async def work(cur: aiomysql.Cursor) -> None:
            # The uploads row first, chunks second: the same lock order as
            # record_chunk (row share lock, then chunk insert), so the two
            # cannot deadlock.
            await cur.execute("DELETE FROM uploads WHERE upload_id = %s", (upload_id,))
            await cur.execute("DELETE FROM upload_chunks WHERE upload_id = %s", (upload_id,))
            await cur.execute("DELETE FROM upload_metadata WHERE upload_id = %s", (upload_id,))
            await cur.execute("DELETE FROM signed_parts WHERE upload_id = %s", (upload_id,))
        await self._run(work, transaction=True, idempotent=True)

    async def find_expired(self, cutoff: datetime, statuses: Sequence[str],
                           limit: int = 500) -> list[Upload]:
        if not statuses:
            return []
        rows = await self._all(
            f"SELECT {UPLOAD_COLUMNS} FROM uploads u WHERE status IN ({_marks(len(statuses))}) "
            f"AND updated_at < %s AND NOT EXISTS (SELECT 1 FROM upload_chunks c "
            f"WHERE c.upload_id = u.upload_id AND c.received_at >= %s) LIMIT %s",
            (*statuses, cutoff, cutoff, limit))
        return [upload_from_row(r) for r in rows]

    async def find_by_status(self, status: str, limit: int = 500) -> list[Upload]:
        rows = await self._all(f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE status = %s LIMIT %s",
                               (status, limit))
        return [upload_from_row(r) for r in rows]

_RECORD_CHUNK = (
    "INSERT INTO upload_chunks (upload_id, chunk_index, size, md5, received_at) "
    "SELECT upload_id, %s, %s, %s, %s FROM uploads "
    "WHERE upload_id = %s AND status = %s "
    "ON DUPLICATE KEY UPDATE size = VALUES(size), md5 = VALUES(md5), "
    "received_at = VALUES(received_at)")


def _marks(count: int) -> str:
    return ",".join(["%s"] * count)
