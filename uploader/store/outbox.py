"""The events outbox, the same queries for SQLite and MySQL.

The stores provide ``MARK``, ``_atomic(work)`` (one transaction; ``work``
gets a :class:`Tx`), ``_all`` and ``_ts``/``_parse_ts`` (how a timestamp
is stored). Claims are leases: an instance writes its token and a deadline
on the rows it takes; rows whose deadline passed (their claimer died) are
free again, so a crash delays an event, never drops it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable, Protocol, Sequence, TypeVar

from ..event_model import Event, OutboxEvent

T = TypeVar("T")
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
_EVENT_COLUMNS = "seq, event_id, type, upload_id, occurred_at, payload"


class Tx(Protocol):
    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute; the number of rows matched."""

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        ...


@dataclass(frozen=True)
class Delivery:
    """One (event, webhook endpoint) pair claimed for a POST."""

    seq: int
    sink: str
    attempts: int
    event: OutboxEvent


@dataclass(frozen=True)
class OutboxStats:
    pending_events: int
    oldest_pending_at: datetime | None
    pending_deliveries: dict[str, int]  # by sink
    failed_deliveries: dict[str, int]  # kept as failed, by sink


def new_token() -> str:
    return uuid.uuid4().hex


class OutboxQueries:
    MARK = "?"

    # -- provided by the store ------------------------------------------------

    async def _atomic(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    @staticmethod
    def _ts(ts: datetime) -> Any:
        return ts

    def _parse_ts(self, value: Any) -> Any:
        return value

    # -- writing (inside the transaction of a state change) -------------------

    async def _insert_event(self, tx: Tx, event: Event) -> None:
        await tx.run(*self._event_insert(event))

    def _event_insert(self, event: Event) -> tuple[str, tuple[Any, ...]]:
        m = self.MARK
        at = self._ts(event.occurred_at)
        return (f"INSERT INTO events (event_id, type, upload_id, occurred_at, payload, "
                f"dispatched_at) VALUES ({m},{m},{m},{m},{m},{m})",
                (event.event_id, event.type, event.upload_id, at, event.payload,
                 at if event.dispatched else None))

    def _event(self, row: Sequence[Any]) -> OutboxEvent:
        return OutboxEvent(seq=int(row[0]), event_id=row[1], type=row[2], upload_id=row[3],
                           occurred_at=self._parse_ts(row[4]), payload=row[5])

    # -- the dispatcher ---------------------------------------------------------

    async def claim_events(self, token: str, now: datetime, until: datetime,
                           limit: int) -> list[OutboxEvent]:
        """Up to ``limit`` undispatched events, oldest first, that nobody
        holds (or whose holder's lease ran out), leased to ``token``."""
        m = self.MARK

        async def work(tx: Tx) -> list[OutboxEvent]:
            free = f"dispatched_at IS NULL AND (claim_until IS NULL OR claim_until < {m})"
            seqs = [r[0] for r in await tx.rows(
                f"SELECT seq FROM events WHERE {free} ORDER BY seq LIMIT {m}",
                (self._ts(now), limit))]
            if not seqs:
                return []
            # The condition again: under READ COMMITTED/REPEATABLE READ two
            # instances may select the same rows; the UPDATE re-reads the
            # latest committed row, so only one of them wins each.
            marks = ",".join([m] * len(seqs))
            await tx.run(f"UPDATE events SET claim_token = {m}, claim_until = {m} "
                         f"WHERE seq IN ({marks}) AND {free}",
                         (token, self._ts(until), *seqs, self._ts(now)))
            return [self._event(r) for r in await tx.rows(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq IN ({marks}) "
                f"AND claim_token = {m} ORDER BY seq", (*seqs, token))]
        return await self._atomic(work)

    async def mark_dispatched(self, token: str, seqs: Sequence[int], now: datetime,
                              deliveries: Sequence[tuple[int, str]]) -> int:
        """Events handed to the stream: dispatched, and one pending delivery
        per (seq, webhook sink), in one transaction. Only rows still
        leased to ``token`` count; returns how many."""
        if not seqs:
            return 0
        m = self.MARK

        async def work(tx: Tx) -> int:
            marks = ",".join([m] * len(seqs))
            mine = [r[0] for r in await tx.rows(
                f"SELECT seq FROM events WHERE seq IN ({marks}) AND claim_token = {m} "
                f"AND dispatched_at IS NULL", (*seqs, token))]
            if not mine:
                return 0
            marks = ",".join([m] * len(mine))
            await tx.run(f"UPDATE events SET dispatched_at = {m}, claim_token = NULL, "
                         f"claim_until = NULL WHERE seq IN ({marks})",
                         (self._ts(now), *mine))
            keep = set(mine)
            for seq, sink in deliveries:
                if seq in keep:
                    await tx.run(f"INSERT INTO event_deliveries (seq, sink, state, attempts, "
                                 f"next_attempt_at) VALUES ({m},{m},{m},0,{m})",
                                 (seq, sink, PENDING, self._ts(now)))
            return len(mine)
        return await self._atomic(work)

    async def claim_deliveries(self, token: str, sinks: Sequence[str], now: datetime,
                               until: datetime, limit: int) -> list[Delivery]:
        if not sinks:
            return []
        m = self.MARK
        sink_marks = ",".join([m] * len(sinks))

        async def work(tx: Tx) -> list[Delivery]:
            free = (f"state = {m} AND next_attempt_at <= {m} AND sink IN ({sink_marks}) "
                    f"AND (claim_until IS NULL OR claim_until < {m})")
            free_params = (PENDING, self._ts(now), *sinks, self._ts(now))
            keys = [(r[0], r[1]) for r in await tx.rows(
                f"SELECT seq, sink FROM event_deliveries WHERE {free} "
                f"ORDER BY next_attempt_at LIMIT {m}", (*free_params, limit))]
            claimed: list[Delivery] = []
            for seq, sink in keys:
                if not await tx.run(f"UPDATE event_deliveries SET claim_token = {m}, "
                                    f"claim_until = {m} WHERE seq = {m} AND sink = {m} "
                                    f"AND {free}",
                                    (token, self._ts(until), seq, sink, *free_params)):
                    continue
                rows = await tx.rows(
                    f"SELECT d.attempts, e.seq, e.event_id, e.type, e.upload_id, "
                    f"e.occurred_at, e.payload FROM event_deliveries d JOIN events e "
                    f"ON e.seq = d.seq WHERE d.seq = {m} AND d.sink = {m}", (seq, sink))
                if rows:
                    claimed.append(Delivery(seq=int(seq), sink=sink, attempts=int(rows[0][0]),
                                            event=self._event(rows[0][1:])))
            return claimed
        return await self._atomic(work)

    async def finish_delivery(self, token: str, seq: int, sink: str, *, state: str,
                              attempts: int, next_attempt_at: datetime, now: datetime,
                              error: str | None = None) -> bool:
        """Record an attempt's outcome (delivered, failed for good, or
        pending with the next attempt's time) if the lease is still ours."""
        m = self.MARK

        async def work(tx: Tx) -> bool:
            return await tx.run(
                f"UPDATE event_deliveries SET state = {m}, attempts = {m}, "
                f"next_attempt_at = {m}, last_error = {m}, finished_at = {m}, "
                f"claim_token = NULL, claim_until = NULL "
                f"WHERE seq = {m} AND sink = {m} AND claim_token = {m}",
                (state, attempts, self._ts(next_attempt_at), (error or "")[:512] or None,
                 self._ts(now) if state != PENDING else None, seq, sink, token)) > 0
        return await self._atomic(work)

    async def outbox_stats(self) -> OutboxStats:
        pending = await self._all("SELECT COUNT(*), MIN(occurred_at) FROM events "
                                  "WHERE dispatched_at IS NULL")
        by_state = await self._all("SELECT sink, state, COUNT(*) FROM event_deliveries "
                                   "WHERE state IN ('pending', 'failed') GROUP BY sink, state")
        return OutboxStats(
            pending_events=int(pending[0][0]),
            oldest_pending_at=self._parse_ts(pending[0][1]) if pending[0][1] else None,
            pending_deliveries={r[0]: int(r[2]) for r in by_state if r[1] == PENDING},
            failed_deliveries={r[0]: int(r[2]) for r in by_state if r[1] == FAILED})

    async def prune_events(self, before: datetime) -> int:
        """Forget dispatched events and finished deliveries older than
        ``before``; an event with a delivery still pending stays."""
        m = self.MARK

        async def work(tx: Tx) -> int:
            await tx.run(f"DELETE FROM event_deliveries WHERE state != {m} "
                         f"AND finished_at < {m}", (PENDING, self._ts(before)))
            return await tx.run(
                f"DELETE FROM events WHERE dispatched_at < {m} AND NOT EXISTS "
                f"(SELECT 1 FROM event_deliveries d WHERE d.seq = events.seq)",
                (self._ts(before),))
        return await self._atomic(work)

    async def events_of(self, upload_id: str) -> list[OutboxEvent]:
        """An upload's events still in the outbox, oldest first."""
        rows = await self._all(f"SELECT {_EVENT_COLUMNS} FROM events WHERE upload_id = "
                               f"{self.MARK} ORDER BY seq", (upload_id,))
        return [self._event(r) for r in rows]
