"""The metadata store interface: uploads and their chunk records.

Two implementations (``sqlite``, ``mysql``) pass one conformance suite
(``tests/store/test_conformance.py``). Every method may raise
:class:`uploader.errors.Unavailable` when the database cannot be reached;
nothing else escapes except programming errors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Mapping, Protocol, Sequence

from ..event_model import Event, OutboxEvent
from ..models import ChunkRecord, TusState, Upload
from .outbox import Delivery, OutboxStats


# (active uploads, reserved bytes) of the owner, reserved bytes of everyone
# -> None, or raises to refuse.
Admit = Callable[[int, int, int], None]


class MetadataStore(Protocol):
    async def open(self) -> None:
        """Connect, then create or migrate the schema (idempotent)."""

    async def close(self) -> None:
        ...

    async def ping(self) -> None:
        """One cheap round trip (readiness checks); raises ``Unavailable``
        when the database cannot answer."""

    async def migrate(self) -> int:
        """Bring the schema to the newest version; return that version.
        Safe when several processes run it at once."""

    async def create_upload(self, upload: Upload, event: Event | None = None, *,
                            admit: Admit | None = None) -> None:
        """The upload row, its metadata and ``event``, in one unit of work.
        ``admit`` is called inside it with the owner's active totals and
        everyone's reserved bytes, counting this upload (``active_totals``);
        if it raises, nothing is written and the exception propagates. Concurrent inits of one owner pass through
        it one at a time, so a quota checked there is exact."""

    async def get_upload(self, upload_id: str, *, with_chunks: bool = True) -> Upload | None:
        """The upload, or None. ``with_chunks`` fills ``received`` and
        ``last_chunk_at``; without it this is one primary-key lookup (the
        per-chunk path uses that)."""

    async def list_uploads(self, owner: str, *, status: str | None = None,
                           filename: str | None = None, limit: int = 100,
                           metadata: Mapping[str, str] | None = None,
                           before: tuple[datetime, str] | None = None) -> list[Upload]:
        """At most ``limit`` of the owner's uploads, newest first (by
        ``created_at``, then ``upload_id``, both descending), each with
        ``received`` filled; ``metadata`` keeps those whose metadata has every
        key with exactly that value (an indexed lookup per key). ``before``
        (created_at, upload_id) starts after that row: a keyset page, an
        index range whatever the number of rows before it."""

    async def get_chunks(self, upload_id: str) -> list[ChunkRecord]:
        """Chunk records sorted by index."""

    async def record_chunk(self, upload_id: str, chunk: ChunkRecord) -> bool:
        """Insert or replace one chunk record in a single statement, only while
        the upload is ``in_progress``. False when it is not (merging,
        completed, aborted, gone): the caller answers 409 and nothing was
        written."""

    async def count_chunks(self, upload_id: str) -> int:
        ...

    async def record_chunk_counted(self, upload_id: str, chunk: ChunkRecord) -> int | None:
        """``record_chunk``, then the upload's number of chunk records, in one
        unit of work (the per-chunk path: one connection, no second trip
        through the pool). None when the record was refused."""

    async def delete_chunk(self, upload_id: str, index: int) -> None:
        ...

    async def begin_merge(self, upload_id: str, from_statuses: Sequence[str]) -> int | None:
        """Set ``merging`` and bump ``merge_version`` atomically if the status
        is one of ``from_statuses``; return the new version (the fencing
        token), or None when the status did not allow it."""

    async def finish_merge(self, upload_id: str, version: int, *, status: str,
                           md5: str | None = None, storage_key: str | None = None,
                           error: dict | None = None, event: Event | None = None,
                           at: datetime | None = None, verified: str | None = None) -> bool:
        """Publish a merge's outcome only if ``merge_version`` still equals
        ``version``. False means another merger took over: discard the result.
        ``event`` is written in the same transaction, only if it applied;
        ``at`` (default now) is the new ``updated_at``, the event's time;
        ``verified`` is stored as the upload's (None: the whole file was hashed)."""

    async def record_signed_parts(self, upload_id: str,
                                  parts: Sequence[tuple[int, str]]) -> None:
        """Remember the MD5 each (index, md5) part's URL was signed for; a
        later signing of an index replaces the earlier one. Removed with the
        upload."""

    async def signed_parts(self, upload_id: str) -> dict[int, str]:
        """index -> the MD5 its part URL was last signed for."""

    async def set_status(self, upload_id: str, status: str,
                         from_statuses: Sequence[str], event: Event | None = None,
                         at: datetime | None = None) -> bool:
        """Change the status if it is one of ``from_statuses`` (and write
        ``event`` with that change, only if it applied)."""

    async def update_tus(self, upload_id: str, tus: TusState, *, size: int | None = None,
                         total_chunks: int | None = None) -> bool:
        """Replace the upload's tus state (and, when a deferred length is
        declared, its size and chunk count) while it is ``in_progress``; counts
        as activity. False when the upload is no longer in progress."""

    async def delete_upload(self, upload_id: str) -> None:
        """Remove the upload row, its chunk records and its metadata."""

    async def find_expired(self, cutoff: datetime, statuses: Sequence[str],
                           limit: int = 500) -> list[Upload]:
        """Uploads in ``statuses`` with no activity (row update or chunk
        arrival) since ``cutoff``; ``received`` is not filled."""

    async def claim_expired(self, claims: Sequence[tuple[str, Event | None]],
                            statuses: Sequence[str], cutoff: datetime,
                            at: datetime) -> list[str]:
        """Mark ``aborted`` (``updated_at`` = ``at``), in one transaction, each
        of these uploads that is still in ``statuses`` with no activity (row
        update or chunk arrival) since ``cutoff``, writing its event with it;
        return the ids that were. What ``find_expired`` found, re-checked
        atomically: an upload touched since is left alone."""

    async def delete_uploads(self, upload_ids: Sequence[str]) -> None:
        """``delete_upload`` of many, in one transaction."""

    async def touch(self, upload_ids: Sequence[str], at: datetime,
                    older_than: datetime) -> int:
        """Activity: ``updated_at`` = ``at`` for those of these uploads that are
        ``in_progress`` and were last updated before ``older_than`` (a chunk
        starting or still streaming); how many changed."""

    async def find_by_status(self, status: str, limit: int = 500) -> list[Upload]:
        ...

    async def existing_ids(self, upload_ids: Sequence[str], *,
                           statuses: Sequence[str] = ()) -> set[str]:
        """Which of these ids have a row (to spot orphaned temp folders), in
        one of ``statuses`` when given (leftover chunks of completed uploads)."""

    async def count_by_status(self) -> dict[str, int]:
        """How many uploads are in each status (statuses with none may be
        absent); read at every metrics scrape, so one indexed GROUP BY."""

    async def active_totals(self, owner: str | None = None) -> tuple[int, int]:
        """(count, sum of total_size) of uploads ``in_progress`` or ``merging``,
        of one owner or, with None, of everyone: what quotas and the
        free-space reserve are checked against. Read from counters (schema
        step 8), never by counting rows."""

    # -- the events outbox (store/outbox.py) -----------------------------------

    async def claim_events(self, token: str, now: datetime, until: datetime,
                           limit: int) -> list[OutboxEvent]:
        """Lease up to ``limit`` undispatched events, oldest first."""

    async def mark_dispatched(self, token: str, seqs: Sequence[int], now: datetime,
                              deliveries: Sequence[tuple[int, str]]) -> int:
        """Leased events dispatched, with their pending webhook deliveries."""

    async def claim_deliveries(self, token: str, sinks: Sequence[str], now: datetime,
                               until: datetime, limit: int) -> list[Delivery]:
        ...

    async def finish_delivery(self, token: str, seq: int, sink: str, *, state: str,
                              attempts: int, next_attempt_at: datetime, now: datetime,
                              error: str | None = None) -> bool:
        ...

    async def outbox_stats(self) -> OutboxStats:
        ...

    async def prune_events(self, before: datetime) -> int:
        ...

    async def events_of(self, upload_id: str) -> list[OutboxEvent]:
        ...
