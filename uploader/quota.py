"""Per-owner quotas and the free-disk reserve (issue 5, point 3).

Checked by the service at init and before every chunk body is read, so a
client learns it cannot proceed (429 / 507) before bytes are spent, and the
disk never fills up under the server: ``storage.min_free_bytes`` stays free.

The checks read then act without a lock, so two inits racing each other may
both pass the last free slot; the reserve absorbs that, and the hard limit
(ENOSPC while writing) still answers 507 through the storage backend.
"""

from __future__ import annotations

from .config import Config
from .errors import UploadError
from .storage.base import SpaceReporting
from .store.base import MetadataStore


class QuotaGuard:
    """``space``: the storage's free-space report (``Features.space``), or
    None for a backend without a disk of its own (S3)."""

    def __init__(self, config: Config, store: MetadataStore,
                 space: SpaceReporting | None) -> None:
        self.config = config
        self.store = store
        self.space = space

    async def check_init(self, owner: str, size: int) -> None:
        quota = self.config.quota
        if quota.max_active_uploads or quota.max_reserved_bytes:
            count, reserved = await self.store.active_totals(owner)
            if quota.max_active_uploads and count >= quota.max_active_uploads:
                # 429, not 507: the cure is to finish or delete uploads first.
                raise UploadError("rate_limited", "too many active uploads; complete or "
                                  "delete some first", retry_after=30,
                                  max_active_uploads=quota.max_active_uploads)
            if quota.max_reserved_bytes and reserved + size > quota.max_reserved_bytes:
                raise UploadError("insufficient_storage", "upload quota exceeded",
                                  quota_bytes=quota.max_reserved_bytes,
                                  reserved_bytes=reserved)
        if self.space is not None:
            # Every active upload may still need its full size (its remaining
            # chunks plus the merged copy written beside them).
            _, reserved_all = await self.store.active_totals(None)
            await self._need(reserved_all + size)

    async def check_chunk(self, length: int) -> None:
        if self.space is not None:
            await self._need(length)

    async def _need(self, length: int) -> None:
        assert self.space is not None
        free = await self.space.free_bytes()
        if length > free - self.config.storage.min_free_bytes:
            raise UploadError("insufficient_storage", "not enough storage space")
