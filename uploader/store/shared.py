"""Queries both SQL stores run word for word; only the placeholder differs
(``?`` for SQLite, ``%s`` for MySQL). Each store provides ``MARK`` and
``_all(sql, params)`` (rows as tuples)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Sequence

from ..models import IN_PROGRESS, TusState, Upload, utcnow
from .rows import dump_tus
from .schema import ALL_TOTALS, OWNER_TOTALS, UPLOAD_COLUMNS

ID_BATCH = 500  # ids per IN (...) list


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

    def _list_sql(self, owner: str, status: str | None, filename: str | None,
                  limit: int, metadata: Mapping[str, str] | None = None
                  ) -> tuple[str, list[Any]]:
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
        sql += f" ORDER BY created_at DESC LIMIT {m}"
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
        # The counters of schema step 7 (kept by triggers): a few rows,
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
