"""Queries both SQL stores run word for word; only the placeholder differs
(``?`` for SQLite, ``%s`` for MySQL). Each store provides ``MARK`` and
``_all(sql, params)`` (rows as tuples)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Sequence, TypeVar

from ..event_model import Event
from ..models import IN_PROGRESS, TusState, Upload, utcnow
from .outbox import Tx
from .rows import dump_tus
from .schema import ALL_TOTALS, OWNER_TOTALS, UPLOAD_COLUMNS

ID_BATCH = 500  # ids per IN (...) list
CLAIM_BATCH = 500  # uploads per claiming UPDATE
EVENT_ROWS = 100  # events per INSERT (5 parameters each)
T = TypeVar("T")


class SharedQueries:
    MARK = "?"
    # An exact (byte for byte) comparison of upload_metadata.value with one
    # parameter per mark; MySQL overrides it (its collations ignore trailing
    # spaces in "=").
    VALUE_MATCH = "value = ?"

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        raise NotImplementedError

    @staticmethod
    def _ts(ts: datetime) -> Any:
        """A timestamp as the driver takes it (SQLite keeps text)."""
        return ts

    async def update_tus(self, upload_id: str, tus: TusState, *, size: int | None = None,
                         total_chunks: int | None = None) -> bool:
        m = self.MARK
        sql = f"UPDATE uploads SET tus = {m}, updated_at = {m}"
        params: list[Any] = [dump_tus(tus), self._ts(utcnow())]
        if size is not None and total_chunks is not None:
            sql += f", total_size = {m}, total_chunks = {m}"
            params += [size, total_chunks]
        sql += f" WHERE upload_id = {m} AND status = {m}"
        return await self._write(sql, [*params, upload_id, IN_PROGRESS]) > 0

    async def record_signed_parts(self, upload_id: str,
                                  parts: Sequence[tuple[int, str]]) -> None:
        m = self.MARK
        rows = list(dict(parts).items())  # one row per index: the last one asked wins
        for start in range(0, len(rows), ID_BATCH):
            part = rows[start:start + ID_BATCH]
            # REPLACE: the one upsert both dialects spell alike.
            await self._write("REPLACE INTO signed_parts (upload_id, chunk_index, md5) VALUES "
                              + ",".join([f"({m},{m},{m})"] * len(part)),
                              [v for index, md5 in part for v in (upload_id, index, md5)])

    async def signed_parts(self, upload_id: str) -> dict[int, str]:
        rows = await self._all(f"SELECT chunk_index, md5 FROM signed_parts WHERE upload_id = "
                               f"{self.MARK}", [upload_id])
        return {int(index): str(md5) for index, md5 in rows}

    def _list_sql(self, owner: str, status: str | None, filename: str | None,
                  limit: int, metadata: Mapping[str, str] | None = None,
                  before: tuple[datetime, str] | None = None) -> tuple[str, list[Any]]:
        m = self.MARK
        sql = f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE owner = {m}"
        params: list[Any] = [owner]
        if status:
            sql += f" AND status = {m}"
            params.append(status)
        if filename:
            sql += f" AND filename = {m}"
            params.append(filename)
        for name, value in (metadata or {}).items():
            # Each filter is an index range of upload_metadata (owner, name,
            # value): the caller's matching uploads, never a scan of them all.
            sql += (f" AND upload_id IN (SELECT upload_id FROM upload_metadata "
                    f"WHERE owner = {m} AND name = {m} AND {self.VALUE_MATCH})")
            params += [owner, name] + [value] * self.VALUE_MATCH.count(m)
        if before is not None:
            # Keyset: strictly after the cursor's row in (created_at,
            # upload_id) descending order. The first conjunct alone is an
            # index range on (owner[, status], created_at, upload_id); the
            # row-value form is not one in every MySQL version.
            created, upload_id = before
            sql += (f" AND created_at <= {m} AND (created_at < {m} OR upload_id < {m})")
            params += [self._ts(created), self._ts(created), upload_id]
        sql += f" ORDER BY created_at DESC, upload_id DESC LIMIT {m}"
        params.append(limit)
        return sql, params

    def _metadata_rows(self, upload: Upload) -> tuple[str, list[tuple[str, str, str, str]]]:
        """The INSERT of an upload's indexed metadata, and its rows."""
        m = self.MARK
        sql = (f"INSERT INTO upload_metadata (upload_id, owner, name, value) "
               f"VALUES ({m},{m},{m},{m})")
        return sql, [(upload.upload_id, upload.owner, k, v) for k, v in upload.metadata.items()]

    async def existing_ids(self, upload_ids: Sequence[str], *,
                           statuses: Sequence[str] = ()) -> set[str]:
        found: set[str] = set()
        ids = list(upload_ids)
        only = ""
        if statuses:
            only = f" AND status IN ({','.join([self.MARK] * len(statuses))})"
        for start in range(0, len(ids), ID_BATCH):
            part = ids[start:start + ID_BATCH]
            marks = ",".join([self.MARK] * len(part))
            rows = await self._all(
                f"SELECT upload_id FROM uploads WHERE upload_id IN ({marks}){only}",
                [*part, *statuses])
            found.update(r[0] for r in rows)
        return found

    async def count_by_status(self) -> dict[str, int]:
        # The counters of schema step 8 (kept by triggers): a few rows,
        # however many uploads there are.
        rows = await self._all("SELECT name, uploads FROM upload_counts WHERE kind = 's'")
        return {r[0]: int(r[1]) for r in rows if r[1]}

    async def active_totals(self, owner: str | None = None) -> tuple[int, int]:
        # Counters, not COUNT/SUM over the uploads: an init reads one or two
        # rows whether the owner has 10 or 1,000,000 uploads.
        if owner is None:
            rows = await self._all(ALL_TOTALS)
        else:
            rows = await self._all(OWNER_TOTALS.replace("?", self.MARK), (owner,))
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    # -- the expiry sweep, a batch at a time (cleanup.py) -----------------------

    if TYPE_CHECKING:
        # Provided by each store; declared for the type checker only.
        async def _atomic(self, work: Callable[[Tx], Awaitable[T]]) -> T: ...

    async def claim_expired(self, claims: Sequence[tuple[str, Event | None]],
                            statuses: Sequence[str], cutoff: datetime,
                            at: datetime) -> list[str]:
        m = self.MARK
        ids = [upload_id for upload_id, _ in claims]
        events = {upload_id: event for upload_id, event in claims if event is not None}
        at_value, cut = self._ts(at), self._ts(cutoff)

        async def work(tx: Tx) -> list[str]:
            claimed: list[str] = []
            for start in range(0, len(ids), CLAIM_BATCH):
                part = ids[start:start + CLAIM_BATCH]
                marks = ",".join([m] * len(part))
                # The sweep's decision, re-checked for every row at the moment
                # of the change: an upload touched (a chunk started or
                # streaming) or given a chunk since the cutoff stays as it is.
                await tx.run(
                    f"UPDATE uploads SET status = 'aborted', updated_at = {m} "
                    f"WHERE upload_id IN ({marks}) "
                    f"AND status IN ({','.join([m] * len(statuses))}) AND updated_at < {m} "
                    f"AND NOT EXISTS (SELECT 1 FROM upload_chunks c WHERE "
                    f"c.upload_id = uploads.upload_id AND c.received_at >= {m})",
                    [at_value, *part, *statuses, cut, cut])
                # Which rows that was: aborted at exactly our stamp (in this
                # transaction, under its write lock, no one else's).
                rows = await tx.rows(
                    f"SELECT upload_id FROM uploads WHERE upload_id IN ({marks}) "
                    f"AND status = 'aborted' AND updated_at = {m}", [*part, at_value])
                claimed += [r[0] for r in rows]
            await self._insert_events(tx, [events[i] for i in claimed if i in events])
            return claimed
        return await self._atomic(work) if claims else []

    async def _insert_events(self, tx: Tx, events: Sequence[Event]) -> None:
        """Many events in few statements (rows of VALUES)."""
        m = self.MARK
        for start in range(0, len(events), EVENT_ROWS):
            part = events[start:start + EVENT_ROWS]
            params: list[Any] = []
            for event in part:
                at = self._ts(event.occurred_at)
                params += [event.event_id, event.type, event.upload_id, at, event.payload,
                           at if event.dispatched else None]  # no sink: see _event_insert
            await tx.run("INSERT INTO events (event_id, type, upload_id, occurred_at, payload, "
                         "dispatched_at) VALUES "
                         + ",".join([f"({m},{m},{m},{m},{m},{m})"] * len(part)), params)

    async def delete_uploads(self, upload_ids: Sequence[str]) -> None:
        ids = list(upload_ids)

        async def work(tx: Tx) -> None:
            # uploads first: the lock order of record_chunk (see delete_upload).
            for table in ("uploads", "upload_chunks", "upload_metadata", "signed_parts"):
                for start in range(0, len(ids), ID_BATCH):
                    part = ids[start:start + ID_BATCH]
                    await tx.run(f"DELETE FROM {table} WHERE upload_id IN "
                                 f"({','.join([self.MARK] * len(part))})", part)
        if ids:
            await self._atomic(work)

    async def touch(self, upload_ids: Sequence[str], at: datetime,
                    older_than: datetime) -> int:
        m = self.MARK
        touched = 0
        ids = list(upload_ids)
        for start in range(0, len(ids), ID_BATCH):
            part = ids[start:start + ID_BATCH]
            touched += await self._write(
                f"UPDATE uploads SET updated_at = {m} WHERE upload_id IN "
                f"({','.join([m] * len(part))}) AND status = {m} AND updated_at < {m}",
                [self._ts(at), *part, IN_PROGRESS, self._ts(older_than)])
        return touched
