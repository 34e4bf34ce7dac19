"""The embedded default metadata store: SQLite through aiosqlite.

One connection (aiosqlite runs it in its own thread) in WAL mode; writers are
serialized by SQLite itself, so the conditional chunk insert and the merge
fence are atomic without extra locking.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Sequence, TypeVar

import aiosqlite

from ..errors import Unavailable, UploadError
from ..event_model import Event
from ..models import IN_PROGRESS, ChunkRecord, Upload, utcnow
from .outbox import OutboxQueries, Tx
from .rows import dump_error, parse_ts, text_to_ts, ts_to_text, upload_from_row, upload_params
from .base import Admit
from .schema import ALL_TOTALS, OWNER_TOTALS, SQLITE_STEPS, UPLOAD_COLUMNS
from .shared import SharedQueries

T = TypeVar("T")
SQLITE_FULL = 13  # the result code (sqlite3.SQLITE_FULL from Python 3.11)


@asynccontextmanager
async def _disk_full() -> AsyncIterator[None]:
    """The database's disk is full (or its quota spent): 507 like a full
    data disk, not 500. SQLite has rolled the statement back; a transaction
    is rolled back by its own context manager before this sees the error."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        # sqlite_errorcode is Python 3.11+; 3.10 has only the message.
        code = getattr(exc, "sqlite_errorcode", None)
        if code == SQLITE_FULL or (code is None and "disk is full" in str(exc)):
            raise UploadError("insufficient_storage",
                              "the metadata database is out of disk space") from exc
        raise


class _SQLiteTx:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    # One trip to aiosqlite's thread per statement: ``async with execute()``
    # then ``fetchall()`` takes three (execute, fetch, close), and each costs
    # a thread switch and a wake-up of the event loop. A statement run to its
    # end leaves nothing open, so its cursor needs no close.
    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int((await self.db.execute(sql, params)).rowcount)

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self.db.execute_fetchall(sql, params))


class SQLiteStore(SharedQueries, OutboxQueries):
    MARK = "?"
    _ts = staticmethod(ts_to_text)

    def __init__(self, path: str | Path, *, synchronous_full: bool = True) -> None:
        self.path = Path(path)
        self._sync = "FULL" if synchronous_full else "NORMAL"
        self._db: aiosqlite.Connection | None = None
        # One connection is shared by every task: while one runs a
        # transaction of several trips, a statement of another task would
        # join it (and vanish with its rollback). Such a transaction holds
        # this lock from BEGIN to COMMIT; anything else waits until it is
        # free (``_trip``), then queues without taking it.
        self._lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise Unavailable("metadata store is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # SQLite gives its -wal and -shm files the database file's mode.
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        # isolation_level=None: autocommit; multi-statement units use BEGIN.
        self._db = await aiosqlite.connect(str(self.path), isolation_level=None, timeout=30)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute(f"PRAGMA synchronous={self._sync}")
        await self._db.execute("PRAGMA foreign_keys=OFF")
        await self.migrate()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> None:
        try:
            await self._one("SELECT 1")
        except sqlite3.Error as exc:
            raise Unavailable("database unavailable") from exc

    async def migrate(self) -> int:
        db = self.db
        # IMMEDIATE takes the write lock first, so two processes starting at
        # once apply each step exactly once.
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            async with db.execute("SELECT MAX(version) FROM schema_version") as cur:
                row = await cur.fetchone()
            current = (row[0] if row else None) or 0
            for number, step in enumerate(SQLITE_STEPS, start=1):
                if number <= current:
                    continue
                for statement in step:
                    await db.execute(statement)
                await db.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
                current = number
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return current

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._all(sql, params)
        return rows[0] if rows else None

    async def _trip(self, make: Callable[[], Awaitable[T]]) -> T:
        """One trip to aiosqlite's thread (``make()``: a statement, or a
        function run there), queued once no transaction of several trips is
        open on the connection, with nothing awaited in between: aiosqlite
        runs its queue in order, so the trip runs before any transaction
        begun after it, and cannot be split by one. Not holding the lock for
        it lets many tasks' statements queue at once: under load the thread
        no longer waits for the event loop between them (each hand-over of
        the lock took a turn of the loop)."""
        async with _disk_full():
            while self._lock.locked():
                async with self._lock:
                    pass
            return await make()

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._trip(lambda: _SQLiteTx(self.db).rows(sql, params))

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._trip(lambda: _SQLiteTx(self.db).run(sql, params))

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One unit of work: IMMEDIATE takes the write lock up front, so the
        statements inside see and change one state."""
        async with self._lock, _disk_full():
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    async def _atomic(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        async with self._transaction() as db:
            return await work(_SQLiteTx(db))

    def _parse_ts(self, value: Any) -> Any:
        return text_to_ts(value)

    async def create_upload(self, upload: Upload, event: Event | None = None, *,
                            admit: Admit | None = None) -> None:
        params = upload_params(upload, ts_to_text)
        insert = (f"INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES "
                  f"({','.join('?' * len(params))})", params)
        metadata = self._metadata_rows(upload) if upload.metadata else None
        event_insert = self._event_insert(event) if event is not None else None

        def work(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(*insert)
                if metadata is not None:
                    db.executemany(*metadata)
                if event_insert is not None:
                    db.execute(*event_insert)
                if admit is not None:
                    # The trigger has counted the row: a refusal rolls it back.
                    owner = db.execute(OWNER_TOTALS, (upload.owner,)).fetchone() or (0, 0)
                    everyone = db.execute(ALL_TOTALS).fetchone()
                    admit(int(owner[0]), int(owner[1]), int(everyone[1]))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        await self._trip(lambda: self._in_thread(work))  # the whole transaction: one trip

    async def _in_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` on the connection in aiosqlite's own thread, in one trip:
        an init is one trip there and back instead of five (each a thread
        switch and a wake-up of the event loop, most of its time on a
        busy machine). aiosqlite has no public call for it; its version is
        pinned (pyproject.toml) and every store test runs through here."""
        db = self.db
        return await db._execute(work, db._conn)

    async def _fill_chunks(self, upload: Upload) -> Upload:
        # One row back instead of one per chunk: the indices come as one
        # string from the covering primary-key index, the newest arrival from
        # the received_at index (status of a 10,000-chunk upload stays cheap).
        row = await self._one(
            "SELECT (SELECT group_concat(chunk_index) FROM upload_chunks WHERE upload_id = ?), "
            "(SELECT MAX(received_at) FROM upload_chunks WHERE upload_id = ?)",
            (upload.upload_id, upload.upload_id))
        received = [int(i) for i in row[0].split(",")] if row[0] else []
        received.sort()  # group_concat's order is not guaranteed (sorted input: O(n))
        upload.received = received
        upload.last_chunk_at = text_to_ts(row[1])
        return upload

    async def get_upload(self, upload_id: str, *, with_chunks: bool = True) -> Upload | None:
        row = await self._one(f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE upload_id = ?",
                              (upload_id,))
        if row is None:
            return None
        upload = upload_from_row(row, text_to_ts)
        return await self._fill_chunks(upload) if with_chunks else upload

    async def list_uploads(self, owner: str, *, status: str | None = None,
                           filename: str | None = None, limit: int = 100,
                           metadata: Mapping[str, str] | None = None,
                           before: tuple[datetime, str] | None = None) -> list[Upload]:
        sql, params = self._list_sql(owner, status, filename, limit, metadata, before)
        uploads = [upload_from_row(r, text_to_ts) for r in await self._all(sql, params)]
        return [await self._fill_chunks(u) for u in uploads]

    async def get_chunks(self, upload_id: str) -> list[ChunkRecord]:
        rows = await self._all("SELECT chunk_index, size, md5, received_at FROM upload_chunks "
                               "WHERE upload_id = ? ORDER BY chunk_index", (upload_id,))
        return [ChunkRecord(r[0], r[1], r[2], parse_ts(r[3])) for r in rows]

    async def record_chunk(self, upload_id: str, chunk: ChunkRecord) -> bool:
        # One statement: the status check and the upsert cannot be split by
        # a merge starting in between.
        count = await self._write(_RECORD_CHUNK, _record_params(upload_id, chunk))
        return count > 0

    async def count_chunks(self, upload_id: str) -> int:
        row = await self._one(_COUNT_CHUNKS, (upload_id,))
        return int(row[0])

    async def record_chunk_counted(self, upload_id: str, chunk: ChunkRecord) -> int | None:
        # One trip to aiosqlite's thread for both (the upsert commits on its
        # own, as record_chunk; the count is a covering-index range count).
        params = _record_params(upload_id, chunk)

        def work(db: sqlite3.Connection) -> int | None:
            if db.execute(_RECORD_CHUNK, params).rowcount <= 0:
                return None
            return int(db.execute(_COUNT_CHUNKS, (upload_id,)).fetchone()[0])
        return await self._trip(lambda: self._in_thread(work))

    async def delete_chunk(self, upload_id: str, index: int) -> None:
        await self._write("DELETE FROM upload_chunks WHERE upload_id = ? AND chunk_index = ?",
                          (upload_id, index))

    async def begin_merge(self, upload_id: str, from_statuses: Sequence[str]) -> int | None:
        marks = ",".join("?" * len(from_statuses))
        async with self._transaction() as db:
            tx = _SQLiteTx(db)
            count = await tx.run(
                f"UPDATE uploads SET status = 'merging', merge_version = merge_version + 1, "
                f"updated_at = ? WHERE upload_id = ? AND status IN ({marks})",
                (ts_to_text(utcnow()), upload_id, *from_statuses))
            rows = await tx.rows("SELECT merge_version FROM uploads WHERE upload_id = ?",
                                 (upload_id,)) if count else []
        return int(rows[0][0]) if rows else None

    async def _change(self, sql: str, params: Sequence[Any], event: Event | None) -> bool:
        """One conditional UPDATE and, if it applied, its event: together."""
        if event is None:
            return await self._write(sql, params) > 0
        async with self._transaction() as db:
            tx = _SQLiteTx(db)
            if not await tx.run(sql, params):
                return False
            await self._insert_event(tx, event)
            return True

    async def finish_merge(self, upload_id: str, version: int, *, status: str,
                           md5: str | None = None, storage_key: str | None = None,
                           error: dict | None = None, event: Event | None = None,
                           at: datetime | None = None, verified: str | None = None) -> bool:
        return await self._change(
            "UPDATE uploads SET status = ?, md5 = COALESCE(?, md5), storage_key = ?, "
            "last_error = ?, updated_at = ?, verified = ? WHERE upload_id = ? AND merge_version = ? "
            "AND status = 'merging'",
            (status, md5, storage_key, dump_error(error), ts_to_text(at or utcnow()), verified,
             upload_id, version), event)

    async def set_status(self, upload_id: str, status: str,
                         from_statuses: Sequence[str], event: Event | None = None,
                         at: datetime | None = None) -> bool:
        marks = ",".join("?" * len(from_statuses))
        return await self._change(
            f"UPDATE uploads SET status = ?, updated_at = ? WHERE upload_id = ? "
            f"AND status IN ({marks})",
            (status, ts_to_text(at or utcnow()), upload_id, *from_statuses), event)

    async def delete_upload(self, upload_id: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM upload_chunks WHERE upload_id = ?", (upload_id,))
            await db.execute("DELETE FROM upload_metadata WHERE upload_id = ?", (upload_id,))
            await db.execute("DELETE FROM signed_parts WHERE upload_id = ?", (upload_id,))
            await db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

    async def find_expired(self, cutoff: datetime, statuses: Sequence[str],
                           limit: int = 500) -> list[Upload]:
        marks = ",".join("?" * len(statuses))
        cut = ts_to_text(cutoff)
        rows = await self._all(
            f"SELECT {UPLOAD_COLUMNS} FROM uploads u WHERE status IN ({marks}) "
            f"AND updated_at < ? AND NOT EXISTS (SELECT 1 FROM upload_chunks c "
            f"WHERE c.upload_id = u.upload_id AND c.received_at >= ?) LIMIT ?",
            (*statuses, cut, cut, limit))
        return [upload_from_row(r, text_to_ts) for r in rows]

    async def find_by_status(self, status: str, limit: int = 500) -> list[Upload]:
        rows = await self._all(f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE status = ? LIMIT ?",
                               (status, limit))
        return [upload_from_row(r, text_to_ts) for r in rows]


_RECORD_CHUNK = (
    "INSERT INTO upload_chunks (upload_id, chunk_index, size, md5, received_at) "
    "SELECT upload_id, ?, ?, ?, ? FROM uploads WHERE upload_id = ? AND status = ? "
    "ON CONFLICT (upload_id, chunk_index) DO UPDATE SET size = excluded.size, "
    "md5 = excluded.md5, received_at = excluded.received_at")
_COUNT_CHUNKS = "SELECT COUNT(*) FROM upload_chunks WHERE upload_id = ?"


def _record_params(upload_id: str, chunk: ChunkRecord) -> tuple[Any, ...]:
    return (chunk.index, chunk.size, chunk.md5, ts_to_text(chunk.received_at), upload_id,
            IN_PROGRESS)
