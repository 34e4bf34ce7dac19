"""Connections to MySQL/MariaDB through an aiomysql pool, and the translation
of their failures: what every unit of work on the database shares (the
metadata store, and anything else that talks to the same database).

- Every pooled connection runs with ``autocommit=True``: a connection left
  inside an old REPEATABLE READ snapshot would serve stale rows to the next
  user. Multi-statement units use an explicit BEGIN/COMMIT on one connection.
- Sessions pin REPEATABLE READ: ``INSERT ... SELECT`` then takes a shared lock
  on the row it reads (what makes the store's ``record_chunk`` atomic against
  ``begin_merge``; under READ COMMITTED it would read a snapshot).
- ``CLIENT.FOUND_ROWS``: rowcount means "rows matched", so an UPDATE or upsert
  that happens to write identical values still reports that it applied.
- Every connection-level failure becomes :class:`Unavailable`; a connection
  that failed, timed out or was cancelled mid-query is closed, never pooled
  again, so the pool heals by itself when the database comes back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, TypeVar

import aiomysql
import pymysql
from pymysql.constants import CLIENT, ER

from ..errors import Unavailable
from .dsn import parse_dsn

log = logging.getLogger("uploader.store.mysql")

T = TypeVar("T")
Work = Callable[[aiomysql.Cursor], Awaitable[T]]

# Server error codes after which the session is gone (besides client-side
# CR_* codes >= 2000): shutdown in progress, connection killed, MySQL 8's
# "disconnected by the server because of inactivity".
_SESSION_GONE = {ER.SERVER_SHUTDOWN, 1927, 4031}
# Errors that mean the socket or session is unusable.
_CONNECTION_ERRORS = (pymysql.err.InterfaceError, OSError, asyncio.IncompleteReadError)


class DatabaseMissing(RuntimeError):
    """The DSN names a database that does not exist: a configuration error,
    not an outage, so it is not reported as Unavailable."""


class _Deadlock(Exception):
    """Internal: InnoDB chose this unit of work as a deadlock victim."""


# A deadlock victim is rolled back whole, so running it again is safe (and
# what MySQL asks for); contended counter rows (schema step 8) make it rare,
# not impossible.
DEADLOCK_RETRIES = 3


class _Disconnected(Exception):
    """Internal: the connection died under a statement (maybe retryable)."""


class QuietCursor(aiomysql.Cursor):
    """Drops server notes (aiomysql turns each into a Python warning), e.g.
    "Table already exists" from the migrations' ``CREATE TABLE IF NOT EXISTS``.
    Not ``warnings.catch_warnings``: it is process-global, unsafe across awaits.
    """

    async def _show_warnings(self, conn: Any) -> None:
        return None


def _is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, pymysql.err.OperationalError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        return code >= 2000 or code in _SESSION_GONE
    return isinstance(exc, _CONNECTION_ERRORS)


class MySQLPool:
    """One lazily created aiomysql pool and the rules for running work on it."""

    def __init__(self, dsn: str, pool_size: int = 10, *, connect_timeout: float = 5.0,
                 query_timeout: float = 30.0) -> None:
        self._params = parse_dsn(dsn)
        self.database: str = self._params["db"]
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        # Bounds every unit of work, acquiring included: aiomysql has no read
        # timeout, so a database that stops answering would hang callers.
        self.query_timeout = query_timeout
        self._pool: aiomysql.Pool | None = None
        self._closed = False

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
        await self.run(work, idempotent=True, timeout=timeout)

    async def run(self, work: Work[T], *, idempotent: bool = False, transaction: bool = False,
                   cursor_class: type = aiomysql.Cursor, timeout: float | None = None) -> T:
        """Run ``work`` on one pooled connection, translating failures.

        ``idempotent`` work is retried once on a fresh connection when its
        connection dies under it (killed, server restarted). Other work is not:
        the first attempt may have been applied before the connection broke;
        the caller gets Unavailable and the next call uses a fresh connection.
        A deadlock victim is run again (up to ``DEADLOCK_RETRIES`` times) when
        it is a transaction or idempotent.
        """
        attempt = deadlocks = 0
        while True:
            attempt += 1
            try:
                return await asyncio.wait_for(self._run_once(work, transaction, cursor_class),
                                              timeout or self.query_timeout)
            except _Deadlock as exc:
                deadlocks += 1
                # Work of several autocommit statements may have committed
                # some before the victim: only a transaction or idempotent
                # work is known to be safe to run again.
                if deadlocks > DEADLOCK_RETRIES or not (transaction or idempotent):
                    raise Unavailable("database unavailable (deadlock)") from exc.__cause__
                attempt -= 1  # not a lost connection
                continue
            except _Disconnected as exc:
                if idempotent and attempt == 1:
                    log.info("database connection lost, retrying once: %s", exc.__cause__)
                    continue
                raise Unavailable("database unavailable") from exc.__cause__
            except asyncio.TimeoutError as exc:
                raise Unavailable("database unavailable (timed out)") from exc

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
                if exc.args and exc.args[0] == ER.LOCK_DEADLOCK:
                    raise _Deadlock(str(exc)) from exc
                # Lock wait timeout, too many connections, access
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
