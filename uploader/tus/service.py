"""The rules of the tus endpoint, on top of UploadService (docs/tus.md).

A tus upload is an upload: created by ``UploadService.create`` (limits,
quotas, sanitized filename), chunks committed by ``commit_chunk``, completed
by ``complete``, removed by ``delete``. What is added here: the offset
(recorded chunks + durable tail), the server-chosen chunk size, deferred
lengths, concatenation, and one PATCH at a time per upload.
"""

from __future__ import annotations

import math
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..errors import UploadError, not_found
from ..locks.base import LockTimeout
from ..models import (ABORTED, COMPLETED, EXPIRABLE, IN_PROGRESS, MERGING, TusState, Upload,
                      chunk_count)
from ..storage.tails import Tails
from .appender import TusAppender
from .protocol import CHECKSUMS, Checksum

if TYPE_CHECKING:
    from ..service import UploadService

ALIGN = 64 << 10
BASE_EXTENSIONS = ["creation", "creation-with-upload", "creation-defer-length", "termination",
                   "checksum", "expiration"]


class TusService:
    def __init__(self, service: "UploadService") -> None:
        self.service = service
        self.store = service.store
        self.config = service.config
        tails = service.features.tails
        assert tails is not None, "this storage backend keeps no tus tails"
        self.tails: Tails = tails
        self.concatenation = service.features.concatenation

    # -- discovery -----------------------------------------------------------

    @property
    def extensions(self) -> list[str]:
        return BASE_EXTENSIONS + (["concatenation"] if self.concatenation else [])

    @property
    def checksum_algorithms(self) -> list[str]:
        return list(CHECKSUMS)

    @property
    def max_size(self) -> int:
        return self.config.limits.max_file_size

    def chunk_size_for(self, size: int | None) -> int:
        """The server picks: the default, raised so the upload stays within
        max_chunks (and the storage's part limits), a multiple of 64 KiB."""
        limits = self.config.limits
        target = size if size is not None else limits.max_file_size
        chunk = max(limits.chunk_size_default, math.ceil(target / limits.max_chunks))
        parts = self.service.features.part_limits
        if parts is not None:
            chunk = max(chunk, parts.min_part_size, math.ceil(target / parts.max_parts))
        chunk = math.ceil(chunk / ALIGN) * ALIGN
        return max(limits.chunk_size_min, min(chunk, limits.chunk_size_max))

    # -- reading -------------------------------------------------------------

    async def get(self, owner: str, upload_id: str) -> Upload:
        upload = await self.service.get(owner, upload_id)
        if upload.status == ABORTED:
            raise not_found(upload_id)
        return upload

    @staticmethod
    def offset_of(upload: Upload) -> int:
        """Bytes durably received: the contiguous chunks from 0, plus the tail
        when it belongs to the next chunk."""
        state = upload.tus
        if upload.status in (COMPLETED, MERGING) or (state is not None and state.parts):
            return upload.size
        prefix = 0
        for index in upload.received:  # sorted
            if index != prefix:
                break
            prefix += 1
        if upload.size_known and prefix >= upload.total_chunks:
            return upload.size
        offset = prefix * upload.chunk_size
        if state is not None and state.tail_size and state.tail_index == prefix:
            offset += state.tail_size
        return offset

    def expires_at(self, upload: Upload) -> datetime | None:
        expiry = self.config.expiry
        if not expiry.enabled or upload.status not in EXPIRABLE:
            return None
        return upload.last_activity + timedelta(seconds=expiry.ttl)

    # -- creation ------------------------------------------------------------

    async def create(self, owner: str, *, length: int | None, metadata: dict[str, str],
                     concat: str | None = None, parts: list[str] | None = None) -> Upload:
        state = TusState(concat=concat, parts=list(parts or []), deferred=length is None,
                         metadata=metadata)
        if concat == "final":
            partials = [await self._complete_partial(owner, pid) for pid in state.parts]
            length = sum(p.size for p in partials)
            state.deferred = False
        elif concat == "partial" and length is None:
            raise UploadError("invalid_request", "a partial upload needs Upload-Length")
        if length is not None and length > self.max_size:
            raise UploadError("too_large", "file is larger than the server accepts",
                              max_file_size=self.max_size)
        filename = metadata.get("filename") or metadata.get("name") or "file"
        # The other keys are the upload's metadata (bounded: 400 beyond);
        # HEAD echoes the header as sent.
        upload = await self.service.create(
            owner, filename=filename, size=length or 0, chunk_size=self.chunk_size_for(length),
            metadata={k: v for k, v in metadata.items() if k != "filename"}, tus=state)
        if concat == "final":
            # Merged at once; the partials go only once the final is completed.
            upload, finished = await self.service.complete(owner, upload.upload_id, None)
            if not finished:
                await self.service.merges.wait_one(upload.upload_id)
                upload = await self.get(owner, upload.upload_id)
            if upload.status == COMPLETED:
                await self._consume(partials)
        return upload

    async def _complete_partial(self, owner: str, upload_id: str) -> Upload:
        if not self.concatenation:
            raise UploadError("invalid_request", "concatenation is not offered by this "
                              "server's storage backend")
        upload = await self.get(owner, upload_id)
        if upload.tus is None or upload.tus.concat != "partial":
            raise UploadError("invalid_request", "Upload-Concat: final may only name partial "
                              "uploads", upload_id=upload_id)
        if upload.status != IN_PROGRESS or self.offset_of(upload) != upload.size \
                or upload.missing():
            raise UploadError("invalid_request", "a partial upload is not complete yet "
                              "(concatenation-unfinished is not supported)", upload_id=upload_id)
        return upload

    async def _consume(self, partials: list[Upload]) -> None:
        """A completed final upload holds the partials' bytes: remove them."""
        for partial in partials:
            await self.store.set_status(partial.upload_id, ABORTED, (IN_PROGRESS,))
            await self.service.remove(partial)

    # -- appending -----------------------------------------------------------

    async def start_append(self, owner: str, upload_id: str, *, offset: int,
                           content_length: int | None, declare: int | None = None,
                           checksum: Checksum | None = None) -> TusAppender | None:
        """Everything refusable before the body; None when the upload is
        already complete and this request brings nothing (an idempotent retry)."""
        await self.get(owner, upload_id)  # 404 before any lock
        stack = AsyncExitStack()
        try:
            try:
                await stack.enter_async_context(self.service.locks.append(upload_id))
            except LockTimeout:
                raise UploadError("locked", "another request is writing to this upload; "
                                  "retry when it is done") from None
            upload = await self.get(owner, upload_id)  # the state under the lock
            appender = await self._appender(upload, offset, content_length, declare, checksum,
                                            stack.aclose)
            if appender is None:
                await stack.aclose()
            return appender
        except BaseException:
            await stack.aclose()
            raise

    async def _appender(self, upload: Upload, offset: int, content_length: int | None,
                        declare: int | None, checksum: Checksum | None,
                        release: object) -> TusAppender | None:
        state = upload.tus
        if state is not None and state.concat == "final":
            raise UploadError("final_upload", "a concatenated upload cannot be patched")
        current = self.offset_of(upload)
        if upload.status != IN_PROGRESS:
            if offset == current and not content_length:
                return None
            raise UploadError("upload_completed", "the upload is complete", status=upload.status)
        if offset != current:
            error = UploadError("offset_mismatch", "Upload-Offset differs from the upload's "
                                "offset", expected_offset=current, provided_offset=offset)
            error.headers["Upload-Offset"] = str(current)
            raise error
        if declare is not None:
            upload = await self._declare(upload, declare, current)
        if upload.size_known:
            left = upload.size - current
            if content_length is not None and content_length > left:
                raise UploadError("too_large", "the body goes past the upload's length",
                                  length=upload.size, offset=current)
            if left == 0 and not content_length and state is not None \
                    and state.concat == "partial":
                return None  # full, and merged by its final upload only
            # Otherwise an appender even for no bytes: every byte is in (a
            # length just declared by an empty PATCH, or a merge that failed
            # before), so it commits the tail as the last chunk and the
            # upload completes.
        await self.service.quota.check_chunk(min(content_length or upload.chunk_size,
                                                 upload.chunk_size))
        # A PATCH is activity from its first byte, as a chunk PUT is.
        await self.service.activity.mark((upload.upload_id,))
        appender = TusAppender(self, upload, current, checksum=checksum,
                               release=release)  # type: ignore[arg-type]
        await appender.start()
        return appender

    async def _declare(self, upload: Upload, length: int, current: int) -> Upload:
        if upload.size_known:
            if length != upload.size:
                raise UploadError("invalid_request", "Upload-Length differs from the upload's "
                                  "length", problem="length_mismatch", length=upload.size)
            return upload
        if length < current:
            raise UploadError("invalid_request", "Upload-Length is below the offset",
                              problem="length_mismatch", offset=current)
        return await self.declare_length(upload, length)

    async def declare_length(self, upload: Upload, length: int) -> Upload:
        """Record a deferred length once (size, chunk count); checked like an
        init's size (limit, free space)."""
        if length > self.max_size:
            raise UploadError("too_large", "file is larger than the server accepts",
                              max_file_size=self.max_size)
        total = chunk_count(length, upload.chunk_size)
        if total > self.config.limits.max_chunks:
            raise UploadError("too_large", "file is larger than its chunk size allows",
                              max_chunks=self.config.limits.max_chunks)
        await self.service.quota.check_chunk(length - self.offset_of(upload))
        state = upload.tus or TusState()
        state.deferred = False
        if not await self.store.update_tus(upload.upload_id, state, size=length,
                                           total_chunks=total):
            raise UploadError("conflict", "the upload is no longer in progress")
        declared = upload.replace(size=length, total_chunks=total, tus=state)
        self.service._forget(upload.upload_id)
        return declared

    async def finish_append(self, owner: str, appender: TusAppender, *,
                            complete: bool = False) -> tuple[Upload, int]:
        """The body arrived: keep it, then complete the upload (the same merge
        as ``complete``) when its last byte is in, unless it is a partial."""
        offset = await appender.finish(complete=complete)
        upload = appender.upload
        state = upload.tus
        if upload.size_known and offset == upload.size and not (state and state.concat):
            upload, _ = await self.service.complete(owner, upload.upload_id, None)
            return upload, offset
        return await self.get(owner, upload.upload_id), offset

    async def terminate(self, owner: str, upload_id: str) -> None:
        await self.get(owner, upload_id)
        await self.service.delete(owner, upload_id)
