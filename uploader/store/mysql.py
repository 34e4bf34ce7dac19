"""The shared metadata store: MySQL/MariaDB through an aiomysql pool.

Design points (ARCHITECTURE.md sections 3 and 10):

- Every pooled connection runs with ``autocommit=True``: a connection left
  inside an old REPEATABLE READ snapshot would serve stale rows to the next
  user. Multi-statement units use an explicit BEGIN/COMMIT on one connection.
- Sessions pin REPEATABLE READ: ``INSERT ... SELECT`` then takes a shared lock
  on the ``uploads`` row it reads, which is what makes ``record_chunk`` atomic
  against ``begin_merge`` (under READ COMMITTED it would read a snapshot).
- ``CLIENT.FOUND_ROWS``: rowcount means "rows matched", so an UPDATE or upsert
  that happens to write identical values still reports that it applied.
- Every connection-level failure becomes :class:`Unavailable`; a connection
  that failed, timed out or was cancelled mid-query is closed, never pooled
  again, so the pool heals by itself when the database comes back.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar
from urllib.parse import unquote, urlsplit

import aiomysql
import pymysql
from pymysql.constants import CLIENT, ER

from ..errors import Unavailable
from ..events.model import Event
from ..models import IN_PROGRESS, ChunkRecord, Upload, utcnow
from .outbox import OutboxQueries, Tx
from .rows import dump_error, upload_from_row, upload_params
from .schema import MYSQL_STEPS, UPLOAD_COLUMNS
from .shared import SharedQueries

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[aiomysql.Cursor], Awaitable[T]]

MIGRATE_LOCK = "uploader_migrate"
MIGRATE_LOCK_WAIT = 30  # seconds GET_LOCK waits for another instance's migration

# Server error codes after which the session is gone (besides client-side
# CR_* codes >= 2000): shutdown in progress, connection killed, MySQL 8's
# "disconnected by the server because of inactivity".
_SESSION_GONE = {ER.SERVER_SHUTDOWN, 1927, 4031}
# Errors that mean the socket or session is unusable.
_CONNECTION_ERRORS = (pymysql.err.InterfaceError, OSError, asyncio.IncompleteReadError)


class DatabaseMissing(RuntimeError):
    """The DSN names a database that does not exist: a configuration error,
    not an outage, so it is not reported as Unavailable."""


class _Disconnected(Exception):
    """Internal: the connection died under a statement (maybe retryable)."""


class _QuietCursor(aiomysql.Cursor):
    """Drops server notes (aiomysql turns each into a Python warning), e.g.
    "Table already exists" from the migrations' ``CREATE TABLE IF NOT EXISTS``.
    Not ``warnings.catch_warnings``: it is process-global, unsafe across awaits.
    """

    async def _show_warnings(self, conn: Any) -> None:
        return None


def parse_dsn(dsn: str) -> dict[str, Any]:
    """``mysql://user[:password]@host[:port]/database`` -> aiomysql kwargs."""
    parts = urlsplit(dsn)
    if parts.scheme != "mysql":
        raise ValueError(f"MySQL DSN must start with mysql://, got {parts.scheme!r}")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ValueError("MySQL DSN must name a database: mysql://user@host:port/database")
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "db": database,
    }


def _is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, pymysql.err.OperationalError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        return code >= 2000 or code in _SESSION_GONE
    return isinstance(exc, _CONNECTION_ERRORS)


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
        self._params = parse_dsn(dsn)
        self.database: str = self._params["db"]
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        # Bounds every unit of work, acquiring included: aiomysql has no read
        # timeout, so a database that stops answering would hang callers.
        self._query_timeout = query_timeout
        self._pool: aiomysql.Pool | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        await self._get_pool()
        await self.migrate()

    async def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            await pool.wait_closed()

    async def _get_pool(self) -> aiomysql.Pool:
        if self._closed:
            raise Unavailable("metadata store is closed")
        if self._pool is None:
            # minsize=0: creating the pool connects nothing, so a store can be
            # built while the database is down and serve once it is back.
            pool = await aiomysql.create_pool(
                minsize=0, maxsize=self._pool_size,
                # Idle connections older than this are replaced before use,
                # instead of meeting a server or NAT timeout mid-query.
                pool_recycle=300,
                connect_timeout=self._connect_timeout,
                autocommit=True, charset="utf8mb4",
                client_flag=CLIENT.FOUND_ROWS,
                sql_mode="'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
                init_command="SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                **self._params)
            if self._pool is not None:  # another task won the race
                pool.close()
            else:
                self._pool = pool
        return self._pool

    async def ping(self, timeout: float = 5.0) -> None:
        async def work(cur: aiomysql.Cursor) -> None:
            await cur.execute("SELECT 1")
            await cur.fetchall()
        # Idempotent: a pooled connection the server dropped is retried once
        # on a fresh one, so a healed database reads as ready at once.
        await self._run(work, idempotent=True, timeout=timeout)

    # -- running units of work ---------------------------------------------

    async def _run(self, work: Work[T], *, idempotent: bool = False, transaction: bool = False,
                   cursor_class: type = aiomysql.Cursor, timeout: float | None = None) -> T:
        """Run ``work`` on one pooled connection, translating failures.

        ``idempotent`` work is retried once on a fresh connection when its
        connection dies under it (killed, server restarted). Other work is not:
        the first attempt may have been applied before the connection broke;
        the caller gets Unavailable and the next call uses a fresh connection.
        """
        for attempt in (1, 2):
            try:
                return await asyncio.wait_for(self._run_once(work, transaction, cursor_class),
                                              timeout or self._query_timeout)
            except _Disconnected as exc:
                if idempotent and attempt == 1:
                    log.info("database connection lost, retrying once: %s", exc.__cause__)
                    continue
                raise Unavailable("database unavailable") from exc.__cause__
            except asyncio.TimeoutError as exc:
                raise Unavailable("database unavailable (timed out)") from exc
        raise AssertionError("unreachable")

    async def _run_once(self, work: Work[T], transaction: bool, cursor_class: type) -> T:
        pool = await self._get_pool()
        try:
            conn = await pool.acquire()
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == ER.BAD_DB_ERROR:
                raise DatabaseMissing(f"MySQL database {self.database!r} does not exist; "
                                      f"create it first (CREATE DATABASE `{self.database}` "
                                      f"CHARACTER SET utf8mb4)") from exc
            raise Unavailable("database unavailable") from exc
        except _CONNECTION_ERRORS as exc:
            raise Unavailable("database unavailable") from exc
        except RuntimeError as exc:  # "Cannot acquire connection after closing pool"
            raise Unavailable("metadata store is closed") from exc
        try:
            cur = await conn.cursor(cursor_class)
            if transaction:
                await conn.begin()
            result = await work(cur)
            if transaction:
                await conn.commit()
            return result
        except asyncio.CancelledError:
            # Cancelled mid-query (timeout, client gone): the reply may still
            # be on its way and would be read by the next user. Drop it.
            conn.close()
            raise
        except Exception as exc:
            if _is_disconnect(exc):
                conn.close()
                raise _Disconnected(str(exc)) from exc
            if isinstance(exc, pymysql.err.OperationalError):
                # Deadlock, lock wait timeout, too many connections, access
                # denied: the database cannot serve this now; the client retries.
                raise Unavailable("database unavailable") from exc
            raise
        finally:
            # A connection still inside a failed transaction is closed by
            # release (rolling it back server-side), never pooled.
            closed = conn.closed
            pool.release(conn)
            if closed:
                # aiomysql does not wake tasks waiting for a free slot when a
                # closed connection is released; without this they would wait
                # for some unrelated release.
                asyncio.ensure_future(pool._wakeup())

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

        return await self._run(work, cursor_class=_QuietCursor,
                               timeout=MIGRATE_LOCK_WAIT + self._query_timeout)

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

    async def create_upload(self, upload: Upload, event: Event | None = None) -> None:
        async def work(cur: aiomysql.Cursor) -> None:
            await cur.execute(f"INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES ({_marks(15)})",
                              upload_params(upload))
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
                           metadata: Mapping[str, str] | None = None) -> list[Upload]:
        sql, params = self._list_sql(owner, status, filename, limit, metadata)

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
                           at: datetime | None = None) -> bool:
        return await self._change(
            "UPDATE uploads SET status = %s, md5 = COALESCE(%s, md5), storage_key = %s, "
            "last_error = %s, updated_at = %s "
            "WHERE upload_id = %s AND merge_version = %s AND status = 'merging'",
            (status, md5, storage_key, dump_error(error), at or utcnow(), upload_id, version),
            event)

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
