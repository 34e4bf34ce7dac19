"""Locks shared by every instance through MySQL/MariaDB named locks.

``GET_LOCK(name, timeout)`` belongs to the session that took it and frees
when that session ends, so each held lock keeps one connection of a small
pool of its own for its whole life. Not the store's ``MySQLPool``: a
connection holding a lock must run nobody else's queries, and its life is
the lock's, not one unit of work's; its sessions also differ (wait_timeout):

- The session's ``wait_timeout`` is the lock's ttl: a holder that stops
  talking (crashed host, SIGSTOP, partition) is disconnected by the server
  after ttl seconds and its lock frees. A holder that exits or is killed
  frees it at once (its socket closes). A keep-alive pings every ttl/3
  while the body runs.
- Named locks are re-entrant per session, and one session cannot hold a
  lock for two of our tasks at once: within a process, tasks queue on an
  in-process lock first, so one process never uses two connections for the
  same name and never nests on one session.
- Names are server-wide (not per database): each is prefixed with the
  database's name, and hashed to MySQL's 64-character limit when longer.

Cost: one connection per lock held or awaited by this instance (merges hold
theirs for the whole merge; chunk commits for milliseconds), up to
``pool_size``; when all are busy an acquisition waits for one, then answers
Unavailable. No fencing token: the ``merge_version`` fence covers holders
that lost their session.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import weakref
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import aiomysql
import pymysql

from ..errors import Unavailable
from ..store.dsn import parse_dsn
from .base import NO_TOKEN, LockHandle, LockTimeout, deadline_of, remaining
from .memory import MemoryLocks

log = logging.getLogger(__name__)

MAX_NAME = 64  # MySQL 5.7+ refuses longer names (MariaDB does not, but may one day)
# A GET_LOCK waits server-side at most this long per statement; a longer wait
# loops. A waiter whose client vanished then lingers on the server for at
# most this long (MariaDB does not notice a closed socket during the wait).
MAX_SLICE = 30.0
_DOWN = (pymysql.err.OperationalError, pymysql.err.InterfaceError, OSError,
         asyncio.IncompleteReadError, asyncio.TimeoutError)


def mysql_lock_name(database: str, name: str) -> str:
    """``<database>:<name>``, or when over 64 bytes its head, ``~`` and a
    128-bit hash of the whole: deterministic, so every instance agrees."""
    full = f"{database}:{name}"
    if len(full.encode()) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:32]
    head = full.encode()[:MAX_NAME - len(digest) - 1].decode(errors="ignore")
    return f"{head}~{digest}"


class MySQLLocks:
    def __init__(self, dsn: str, *, ttl: float, pool_size: int = 16,
                 connect_timeout: float = 5.0, query_timeout: float = 10.0) -> None:
        self._params = parse_dsn(dsn)
        self.database: str = self._params["db"]
        self._ttl = ttl
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._query_timeout = query_timeout
        self._local = MemoryLocks()
        self._pool: aiomysql.Pool | None = None
        self._pool_lock = asyncio.Lock()
        # wait_timeout of connections set to another ttl than the pool's.
        self._session_ttl: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._closed = False

    def key(self, name: str) -> str:
        """The server-side lock name (for tests and operators:
        ``SELECT IS_USED_LOCK('<key>')`` gives the holder's connection id)."""
        return mysql_lock_name(self.database, name)

    @asynccontextmanager
    async def lock(self, name: str, *, ttl: float,
                   wait: float | None = None) -> AsyncIterator[LockHandle]:
        if ttl <= 0:
            raise ValueError("ttl must be > 0: a lock without expiry outlives a crashed holder")
        deadline = deadline_of(wait)
        key = self.key(name)
        async with self._local.lock(name, ttl=ttl, wait=wait):
            conn = await self._connection(ttl, deadline)
            try:
                acquired = await self._get_lock(conn, key, deadline)
            except BaseException:
                self._discard(conn)  # mid-statement: its reply would desync the next user
                raise
            if not acquired:
                self._give_back(conn, ttl)
                raise LockTimeout(name)
            stop = asyncio.Event()
            keeper = asyncio.ensure_future(self._keep_alive(conn, name, ttl, stop))
            try:
                yield NO_TOKEN
            finally:
                stop.set()
                try:
                    # Waited for, not cancelled: a ping cut mid-flight would
                    # leave the connection unusable for RELEASE_LOCK.
                    held = await asyncio.shield(keeper)
                except asyncio.CancelledError:
                    keeper.cancel()
                    self._discard(conn)  # closing the session frees the lock
                    raise
                await self._release(conn, key, name, ttl, held)

    # -- connections -------------------------------------------------------

    async def _get_pool(self) -> aiomysql.Pool:
        if self._closed:
            raise Unavailable("lock service is closed")
        async with self._pool_lock:
            if self._pool is None:
                # minsize=0: nothing connects until a lock is wanted, so the
                # server starts while MySQL is down. Idle connections are
                # replaced before the server's wait_timeout (= ttl) ends them.
                self._pool = await aiomysql.create_pool(
                    minsize=0, maxsize=self._pool_size, pool_recycle=self._ttl / 2,
                    connect_timeout=self._connect_timeout, autocommit=True,
                    init_command=f"SET SESSION wait_timeout = {math.ceil(self._ttl)}",
                    **self._params)
            return self._pool

    async def _connection(self, ttl: float, deadline: float | None) -> Any:
        pool = await self._get_pool()
        left = remaining(deadline)
        # Waiting for a free connection counts against the wait, but a
        # try-once still gets the time to open one.
        limit = self._connect_timeout if left is None else max(left, self._connect_timeout)
        try:
            conn = await asyncio.wait_for(pool.acquire(), None if deadline is None else limit)
        except asyncio.TimeoutError:
            if pool.size >= pool.maxsize:
                log.warning("all %d MySQL lock connections are busy; raise "
                            "locks.mysql_pool_size if this persists", pool.maxsize)
                raise Unavailable("all lock connections are busy") from None
            raise Unavailable("lock service unavailable (connect timed out)") from None
        except _DOWN as exc:
            raise Unavailable("lock service unavailable") from exc
        except RuntimeError as exc:  # "Cannot acquire connection after closing pool"
            raise Unavailable("lock service is closed") from exc
        if ttl != self._ttl and self._session_ttl.get(conn) != math.ceil(ttl):
            try:
                await self._scalar(conn, "SET SESSION wait_timeout = %s", (math.ceil(ttl),))
            except BaseException:
                self._discard(conn)
                raise
            self._session_ttl[conn] = math.ceil(ttl)
        return conn

    def _give_back(self, conn: Any, ttl: float) -> None:
        """Back to the pool, unless its wait_timeout is not the pool's."""
        if ttl != self._ttl:
            self._discard(conn)
        elif self._pool is not None:
            self._pool.release(conn)

    def _discard(self, conn: Any) -> None:
        """Close (the server frees any lock it held) and free its pool slot."""
        conn.close()
        if self._pool is not None:
            self._pool.release(conn)
            # aiomysql does not wake tasks waiting for a slot when a closed
            # connection is released.
            asyncio.ensure_future(self._pool._wakeup())

    async def _scalar(self, conn: Any, sql: str, args: tuple, timeout: float | None = None
                      ) -> Any:
        try:
            async def run() -> Any:
                async with conn.cursor() as cur:
                    await cur.execute(sql, args)
                    row = await cur.fetchone()
                    return row[0] if row else None
            return await asyncio.wait_for(run(), timeout or self._query_timeout)
        except _DOWN as exc:
            raise Unavailable("lock service unavailable") from exc

    # -- the lock ----------------------------------------------------------

    async def _get_lock(self, conn: Any, key: str, deadline: float | None) -> bool:
        while True:
            left = remaining(deadline)
            span = MAX_SLICE if left is None else min(left, MAX_SLICE)
            got = await self._scalar(conn, "SELECT GET_LOCK(%s, %s)", (key, span),
                                     timeout=span + self._query_timeout)
            if got == 1:
                return True
            if got is None:  # an error inside GET_LOCK (session killed)
                raise Unavailable("lock service unavailable (GET_LOCK failed)")
            if left is not None and left <= span:
                return False

    async def _keep_alive(self, conn: Any, name: str, ttl: float, stop: asyncio.Event) -> bool:
        """Pings until stopped; False once the session is gone (lock lost)."""
        interval = ttl / 3
        while True:
            try:
                await asyncio.wait_for(stop.wait(), interval)
                return True
            except asyncio.TimeoutError:
                pass
            try:
                # Past ttl without a word the server ends the session anyway.
                await asyncio.wait_for(conn.ping(reconnect=False), 2 * interval)
            except Exception as exc:
                log.warning("lock %r was lost while held (its MySQL session failed: %s); "
                            "the merge_version fence protects the result", name, exc)
                conn.close()
                return False

    async def _release(self, conn: Any, key: str, name: str, ttl: float, held: bool) -> None:
        # Logged, not raised (as with every backend): the body's work is
        # done, and a lock whose session is closed is free.
        if not held:
            self._discard(conn)
            return
        try:
            released = await self._scalar(conn, "SELECT RELEASE_LOCK(%s)", (key,))
        except (Unavailable, asyncio.CancelledError) as exc:
            log.warning("could not release lock %r (its connection is closed instead): %s",
                        name, exc)
            self._discard(conn)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if released != 1:
            log.warning("lock %r was no longer held at release (session lost)", name)
            self._discard(conn)
            return
        self._give_back(conn, ttl)

    # -- service -----------------------------------------------------------

    async def ping(self) -> bool:
        try:
            conn = await self._connection(self._ttl, deadline_of(0))
        except Unavailable:
            return False
        try:
            ok = await self._scalar(conn, "SELECT 1", ()) == 1
        except BaseException as exc:
            self._discard(conn)
            if isinstance(exc, Unavailable):
                return False
            raise
        self._give_back(conn, self._ttl)
        return ok

    async def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            # terminate, not close: a lock still held (a task that outlived
            # shutdown) must not keep us waiting; its session ends, it frees.
            pool.terminate()
            await pool.wait_closed()
        await self._local.close()
