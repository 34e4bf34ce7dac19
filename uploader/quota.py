"""Per-owner quotas and the free-disk reserve (issue 5, point 3).

Checked by the service at init and before every chunk body is read, so a
client learns it cannot proceed (429 / 507) before bytes are spent, and the
disk never fills up under the server: ``storage.min_free_bytes`` stays free.

The per-owner limits are checked twice: early from the counters (before any
backend state is made), then exactly by ``admit`` inside the transaction that
inserts the row, where an owner's concurrent inits pass one at a time. The
free-space check reads then acts without a lock, so two inits racing each
other may both pass the last free bytes; the reserve absorbs that, and the
hard limit (ENOSPC while writing) still answers 507 through the storage backend.

Free space is read (statvfs, in the I/O pool: on NFS it is a network call)
at most every ``FREE_SPACE_AGE`` seconds; in between, the chunk bytes passed
since are taken off the last reading. At hundreds of requests a second the
thread hop cost more than the rest of the check (issue 21: per-request cost).
"""

from __future__ import annotations

import asyncio
import time

from .config import Config
from .errors import UploadError
from .storage.base import SpaceReporting
from .store.base import Admit, MetadataStore

FREE_SPACE_AGE = 0.5  # seconds a free-space reading is used for


class FreeSpace:
    """The storage's free bytes, read at most every ``max_age`` seconds
    (one reading at a time), less the chunk bytes admitted since."""

    def __init__(self, space: SpaceReporting, max_age: float = FREE_SPACE_AGE) -> None:
        self.space = space
        self.max_age = max_age
        self._free = 0
        self._taken = 0
        self._read_at: float | None = None
        self._reading: asyncio.Future[int] | None = None

    async def free(self) -> int:
        if self._read_at is None or time.monotonic() - self._read_at > self.max_age:
            if self._reading is None:
                self._reading = asyncio.ensure_future(self._read())
                # Its waiters may all be gone (clients hung up): never an
                # unretrieved exception.
                self._reading.add_done_callback(
                    lambda task: task.cancelled() or task.exception())
            reading = self._reading
            await asyncio.shield(reading)
        return self._free - self._taken

    async def _read(self) -> int:
        try:
            free = await self.space.free_bytes()
        finally:
            self._reading = None
        self._free, self._taken, self._read_at = free, 0, time.monotonic()
        return free

    def take(self, length: int) -> None:
        """``length`` bytes about to be written (until the next reading)."""
        self._taken += length


class QuotaGuard:
    """``space``: the storage's free-space report (``Features.space``), or
    None for a backend without a disk of its own (S3)."""

    def __init__(self, config: Config, store: MetadataStore,
                 space: SpaceReporting | None) -> None:
        self.config = config
        self.store = store
        self.space = FreeSpace(space) if space is not None else None

    async def check_init(self, owner: str, size: int, *, early: bool) -> Admit | None:
        """What can be refused before the row is written; returns what the
        store calls inside the insert's transaction (``admit``), None when
        nothing is limited. ``early``: also check the owner's limits now
        (before backend state, such as an S3 multipart upload, is made)."""
        if early and self.limited:
            count, reserved = await self.store.active_totals(owner)
            self._check(count + 1, reserved + size, size)
        free = None
        if self.space is not None:
            free = await self.space.free()
            self._need(2 * size, free)  # this upload alone does not fit
        if not self.limited and free is None:
            return None

        def admit(count: int, reserved: int, reserved_all: int) -> None:
            self._check(count, reserved, size)
            if free is not None:
                # The new upload needs twice its size before it completes: all
                # its chunks and the merged copy (or the incremental fold)
                # coexist until the file is published. Uploads already running
                # are counted once: part of their two copies is on the disk.
                self._need(reserved_all + size, free)
        return admit

    @property
    def limited(self) -> bool:
        return bool(self.config.quota.max_active_uploads or self.config.quota.max_reserved_bytes)

    def _check(self, count: int, reserved: int, size: int) -> None:
        """``count`` and ``reserved`` include the upload being admitted."""
        quota = self.config.quota
        if quota.max_active_uploads and count > quota.max_active_uploads:
            # 429, not 507: the cure is to finish or delete uploads first.
            raise UploadError("rate_limited", "too many active uploads; complete or "
                              "delete some first", retry_after=30,
                              max_active_uploads=quota.max_active_uploads)
        if quota.max_reserved_bytes and reserved > quota.max_reserved_bytes:
            raise UploadError("insufficient_storage", "upload quota exceeded",
                              quota_bytes=quota.max_reserved_bytes,
                              reserved_bytes=reserved - size)

    async def check_chunk(self, length: int) -> None:
        if self.space is not None:
            self._need(length, await self.space.free())
            self.space.take(length)

    def _need(self, length: int, free: int) -> None:
        if length > free - self.config.storage.min_free_bytes:
            raise UploadError("insufficient_storage", "not enough storage space")
