"""UploadService: the rules of an upload's life (no HTTP, no SQL, no paths).

Handlers parse requests into typed arguments and call it; it calls the
metadata store, the storage and the locks through their interfaces, and the
merge saga (``merging.py``) for ``complete``. Every failure it raises is an
``UploadError`` code from the one error table.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from concurrent.futures import Executor
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Mapping, Sequence

from . import direct_uploads as direct
from . import event_model as events
from . import paging
from .activity import ActivityMarks
from .config import Config
from .errors import UploadError, not_found
from .events.recorder import EventLog
from .features import Features
from .hooks import PreCreateHook
from .links import invalid_link, links_from_config
from .locks.base import LockTimeout
from .locks.names import UploadLocks
from .merging import Merges, check_complete
from .metadata import check_metadata
from .models import (ABORTED, COMPLETED, FAILED, IN_PROGRESS, MERGING, STATUSES, ChunkRecord,
                     TusState, Upload, chunk_count, isoformat, utcnow)
from .naming import is_upload_id, new_upload_id, sanitize_filename
from .paging import Page
from .quota import QuotaGuard
from .receiver import ChunkReceiver
from .storage.base import Storage
from .store.base import MetadataStore

META_CACHE_SIZE = 10_000  # uploads whose immutable metadata a process remembers


class UploadService:
    def __init__(self, config: Config, store: MetadataStore, storage: Storage,
                 locks: UploadLocks, merges: Merges, features: Features,
                 executor: Executor, events: EventLog) -> None:
        self.config = config
        self.store = store
        self.storage = storage
        self.locks = locks
        self.merges = merges
        self.features = features
        self.executor = executor
        self.events = events
        # The blocking pre-create hook, when hooks.pre_create_url is set.
        self.pre_create: PreCreateHook | None = None
        self.quota = QuotaGuard(config, store, features.space)
        self.links = links_from_config(config)
        # Immutable metadata (owner, sizes) of in_progress uploads seen here,
        # so a chunk PUT needs no lookup before its body: the status is checked
        # atomically by record_chunk anyway. Evicted on any change seen here.
        self._meta: OrderedDict[str, Upload] = OrderedDict()
        # A chunk starting or streaming is activity the expiry sweep respects.
        self.activity = ActivityMarks(store, config.expiry.ttl)

    def _forget(self, upload_id: str) -> None:
        self._meta.pop(upload_id, None)

    # -- reading ---------------------------------------------------------

    def to_json(self, upload: Upload) -> dict[str, Any]:
        doc = upload.to_json(self.config.expiry.ttl if self.config.expiry.enabled else None)
        merged = upload.merged_bytes if upload.merged_bytes is not None \
            else self.merges.progress(upload.upload_id)
        if upload.status == MERGING and merged is not None:
            doc["merged_bytes"] = merged
        if self.features.direct is not None:
            doc["direct"] = True
        return doc

    async def get(self, owner: str, upload_id: str, *, with_chunks: bool = True) -> Upload:
        if not is_upload_id(upload_id):
            raise not_found(upload_id)
        upload = await self.store.get_upload(upload_id, with_chunks=with_chunks)
        # Another owner's upload is indistinguishable from a missing one.
        if upload is None or upload.owner != owner:
            raise not_found(upload_id)
        if with_chunks and self.features.direct is not None and upload.status == IN_PROGRESS:
            upload = await direct.sync_parts(self.store, self.features.direct, upload)
        return upload

    async def status(self, owner: str, upload_id: str) -> Upload:
        """The upload as ``GET status`` shows it: merging (with the bytes
        merged so far) while a merge of it runs anywhere."""
        return await self.merges.shown(await self.get(owner, upload_id))

    async def list(self, owner: str, *, statuses: Sequence[str] = (),
                   filename: str | None = None,
                   metadata: Mapping[str, str] | None = None,
                   limit: int = paging.DEFAULT_LIMIT, cursor: str | None = None) -> Page:
        """One page of the owner's uploads, newest first, in any of
        ``statuses`` (all when empty) whose metadata has each of ``metadata``;
        ``cursor`` (a previous page's ``next_cursor``) continues after it."""
        wanted = list(dict.fromkeys(statuses))
        if any(status not in STATUSES for status in wanted):
            raise UploadError("invalid_request", "unknown status filter", statuses=list(STATUSES))
        paging.check_limit(limit)
        before = paging.decode_cursor(cursor) if cursor is not None else None
        # One more than the page: whether another follows, without a count.
        fetch = limit + 1
        if len(wanted) <= 1:
            found = await self.store.list_uploads(
                owner, status=wanted[0] if wanted else None, filename=filename or None,
                limit=fetch, metadata=metadata or None, before=before)
            return paging.page_of(found, limit)
        # The store filters by one status (an index range each): every query
        # brings its first rows after the cursor, so the page's rows are among
        # them; merged in the same order.
        found = [upload for status in wanted
                 for upload in await self.store.list_uploads(
                     owner, status=status, filename=filename or None, limit=fetch,
                     metadata=metadata or None, before=before)]
        found.sort(key=paging.sort_key, reverse=True)
        return paging.page_of(found[:fetch], limit)

    # -- init --------------------------------------------------------------

    async def create(self, owner: str, *, filename: str, size: int,
                     chunk_size: int | None = None, md5: str | None = None,
                     metadata: Mapping[str, str] | None = None,
                     headers: Mapping[str, str] | None = None,
                     tus: TusState | None = None) -> Upload:
        """A new upload. ``headers`` are the request's, for the pre-create
        hook (which sees only its allow-listed ones); ``tus`` the tus
        endpoint's state of it."""
        limits = self.config.limits
        if size < 0:
            raise UploadError("invalid_request", "size must be >= 0")
        if size > limits.max_file_size:
            raise UploadError("too_large", "file is larger than the server accepts",
                              max_file_size=limits.max_file_size)
        if chunk_size is None:  # only an absent chunk_size takes the default; 0 is out of range
            chunk_size = limits.chunk_size_default
        if not limits.chunk_size_min <= chunk_size <= limits.chunk_size_max:
            raise UploadError("invalid_request", "chunk_size out of range",
                              chunk_size_min=limits.chunk_size_min,
                              chunk_size_max=limits.chunk_size_max)
        total = chunk_count(size, chunk_size)
        if total > limits.max_chunks:
            raise UploadError("invalid_request", "too many chunks: use a larger chunk_size",
                              max_chunks=limits.max_chunks)
        self._check_part_limits(size, chunk_size, total)
        meta = check_metadata(metadata)  # callers other than the JSON API (tus) too
        if self.pre_create is not None:
            # Last, so the hook sees only requests we would accept; it may
            # change the owner and metadata, or lower the size limit.
            decision = await self.pre_create.check(
                owner=owner, filename=filename, size=size, chunk_size=chunk_size,
                metadata=meta, headers=headers)
            owner, meta = decision.owner, decision.metadata
            if decision.max_size is not None and size > decision.max_size:
                raise UploadError("too_large", "file is larger than this upload may be",
                                  max_file_size=decision.max_size)
        admit = await self.quota.check_init(owner, size, early=self.features.hooks is not None)
        now = utcnow()
        upload = Upload(upload_id=new_upload_id(), owner=owner,
                        filename=sanitize_filename(filename), size=size, chunk_size=chunk_size,
                        total_chunks=total, md5=md5, status=IN_PROGRESS, created_at=now,
                        updated_at=now, metadata=meta, tus=tus)
        if tus is not None and tus.parts:
            upload.total_chunks = 0  # a tus final upload's bytes are its partials' chunks
        if self.features.hooks is not None:
            # Before the row: a row never points at backend state that was
            # not created. The reverse (an init that dies in between) leaves
            # backend state without a row, which the orphan sweep removes.
            upload.backend_state = await self.features.hooks.create_upload(upload)
        event = self.events.make(events.CREATED, upload)
        await self.store.create_upload(upload, event, admit=admit)
        self.events.written(event)
        self.activity.marked_now(upload.upload_id)  # updated_at = now: no mark at chunk 0
        return upload

    def _check_part_limits(self, size: int, chunk_size: int, total: int) -> None:
        """The backend's own bounds on a chunk, refused at init with their values."""
        lim = self.features.part_limits
        if lim is None:
            return
        if total > 1 and chunk_size < lim.min_part_size:
            raise UploadError("invalid_request", "chunk_size is below this storage's minimum "
                              "part size (every chunk but the last is one part)",
                              min_part_size=lim.min_part_size)
        if min(chunk_size, size) > lim.max_part_size:
            raise UploadError("invalid_request", "chunk_size is above this storage's maximum "
                              "part size", max_part_size=lim.max_part_size)
        if total > lim.max_parts:
            raise UploadError("invalid_request", "too many chunks for this storage: use a "
                              "larger chunk_size", max_parts=lim.max_parts)

    # -- chunks ------------------------------------------------------------

    async def start_chunk(self, owner: str, upload_id: str, index: int, md5: str | None,
                          content_length: int | None) -> ChunkReceiver:
        """Everything that can be refused before a body byte is read."""
        upload = self._meta.get(upload_id)
        if upload is None or upload.owner != owner:
            upload = await self.get(owner, upload_id, with_chunks=False)
            if upload.status == IN_PROGRESS:
                self._meta[upload_id] = upload
                if len(self._meta) > META_CACHE_SIZE:
                    self._meta.popitem(last=False)
        if self.merges.running(upload_id):
            upload = upload.replace(status=MERGING)  # merging here: refuse before the body
        if upload.status != IN_PROGRESS:
            raise UploadError("conflict", f"upload is {upload.status}", status=upload.status)
        if not 0 <= index < upload.total_chunks:
            raise UploadError("invalid_request", "index out of range",
                              total_chunks=upload.total_chunks)
        expected = upload.chunk_length(index)
        if content_length is not None:
            if content_length > expected:
                raise UploadError("too_large", "chunk body is longer than this chunk",
                                  expected=expected)
            if content_length < expected:
                raise UploadError("size_mismatch", "chunk body is shorter than this chunk",
                                  expected=expected, received=content_length)
        await self.quota.check_chunk(expected)
        # Before the first body byte: a sweep deciding from now on sees the
        # upload active (it re-checks updated_at when it claims).
        await self.activity.mark((upload_id,))
        writer = await self.storage.open_chunk(upload, index)
        receiver = ChunkReceiver(writer, self.executor, upload_id=upload_id, index=index,
                                 total_chunks=upload.total_chunks, expected_size=expected,
                                 expected_md5=md5, max_buffered=self.config.server.max_buffered)
        self.activity.streaming(receiver)
        return receiver

    async def finish_chunk(self, receiver: ChunkReceiver) -> dict[str, Any]:
        size, md5 = await receiver.finish()
        count = await self.commit_chunk(receiver, size, md5)
        return {"index": receiver.index, "size": size, "md5": md5,
                "received_chunks": count, "total_chunks": receiver.total_chunks}

    async def commit_chunk(self, receiver: ChunkReceiver, size: int, md5: str) -> int:
        """Put a verified chunk in place and record it; returns how many
        chunks the upload has now (the tus endpoint commits the chunks of a
        PATCH carrying a checksum only once the whole body matched)."""
        upload_id = receiver.upload_id
        try:
            # Under the upload's lock, put-in-place and record are one step
            # against merges (which take the same lock) and against another
            # writer of the same chunk: the file on disk and its record can
            # never disagree, and no chunk changes under a running merge.
            # Other commits hold it for milliseconds; a merge may hold it for
            # long: after a lock TTL's wait the answer is 409, retryable.
            async with self.locks.upload(upload_id, wait=self.config.locks.ttl):
                # A merge may have finished (or a delete run) before we got the
                # lock: never rename into an upload that is no longer open.
                current = await self.store.get_upload(upload_id, with_chunks=False)
                if current is None or current.status != IN_PROGRESS:
                    self._forget(upload_id)
                    if current is None or current.status == ABORTED:
                        raise not_found(upload_id)
                    raise UploadError("conflict", f"upload is {current.status}",
                                      status=current.status)
                index = receiver.index
                await receiver.commit(lambda: self.store.delete_chunk(upload_id, index))
                try:  # the upsert (status checked atomically) and the count together
                    count = await self.store.record_chunk_counted(
                        upload_id, ChunkRecord(index=index, size=size, md5=md5))
                except BaseException:
                    # Not recorded (full database disk, outage): not left marked whole.
                    await receiver.revert()
                    raise
        except LockTimeout:
            raise UploadError("conflict", "upload is merging", status=MERGING) from None
        finally:
            await receiver.abort()  # a no-op once committed
        if count is None:
            # Deleted or expired between the check and the record: leave
            # nothing behind.
            self._forget(upload_id)
            await self.storage.delete_chunks(upload_id)
            raise not_found(upload_id)
        return count

    async def presign_parts(self, owner: str, upload_id: str,
                            parts: Sequence[tuple[int, str | None]]
                            ) -> Sequence[dict[str, Any]]:
        """Presigned PUT URLs of these (index, md5) chunks (direct mode)."""
        if self.features.direct is None:
            raise UploadError("not_found", "direct uploads are not enabled")
        upload = await self.get(owner, upload_id, with_chunks=False)
        if self.merges.running(upload_id):
            upload = upload.replace(status=MERGING)  # merging here, not yet recorded
        return await direct.presign_parts(self.store, self.features.direct, upload, parts)

    # -- complete ----------------------------------------------------------

    async def complete(self, owner: str, upload_id: str,
                       md5: str | None) -> tuple[Upload, bool]:
        """Returns (upload, finished). Not finished: the merge goes on in the
        background and the caller answers 202."""
        self._forget(upload_id)
        upload = await self.get(owner, upload_id)
        if upload.status == COMPLETED:
            return self._same_md5(upload, md5), True
        if upload.status == ABORTED:
            raise UploadError("conflict", "upload is aborted", status=ABORTED)
        if upload.status != MERGING:
            check_complete(upload)
        wait = self.config.merge.wait_seconds
        # merged_ahead is 0 without an incremental fold: then the whole file
        # is left, and background_over applies all the same.
        if upload.size - self.merges.merged_ahead(upload_id) > self.config.merge.background_over:
            wait = 0  # much left: answer 202 now, status shows merged_bytes
        task = self.merges.start(upload_id, md5)
        try:
            merged = await asyncio.wait_for(asyncio.shield(task), wait)
        except asyncio.TimeoutError:
            current = await self.status(owner, upload_id)
            if current.status in (IN_PROGRESS, FAILED) and not task.done():
                # Accepted but its task has not reached begin_merge yet.
                current = current.replace(status=MERGING)
            return current, False
        return self._same_md5(merged, md5), True

    @staticmethod
    def _same_md5(upload: Upload, md5: str | None) -> Upload:
        if md5 and upload.md5 and md5 != upload.md5:  # verified by parts: md5 is a claim
            what = "was claimed with another MD5" if upload.verified else "has a different MD5"
            raise UploadError("checksum_mismatch", f"the completed file {what}",
                              expected=md5, actual=upload.md5)
        return upload

    # -- delete, download --------------------------------------------------

    async def delete(self, owner: str, upload_id: str) -> None:
        self._forget(upload_id)
        upload = await self.get(owner, upload_id, with_chunks=False)
        if upload.status == MERGING:
            raise UploadError("conflict", "upload is merging", status=MERGING)
        # Aborted first: chunk records racing this delete are refused. A
        # repeated delete of an aborted row (a retry) reports nothing new.
        now = utcnow()
        event = self.events.make(events.DELETED, upload.replace(status=ABORTED, updated_at=now))
        if await self.store.set_status(upload_id, ABORTED, (IN_PROGRESS, FAILED, COMPLETED),
                                       event, at=now):
            self.events.written(event)
        else:
            await self.store.set_status(upload_id, ABORTED, (ABORTED,))
        await self.remove(upload)

    async def remove(self, upload: Upload) -> None:
        """Bytes first, then rows: a crash in between leaves a row the
        sweep finds again, never bytes nobody knows of."""
        await self.storage.delete_upload(upload)
        await self.store.delete_upload(upload.upload_id)

    async def open_download(self, owner: str, upload_id: str) -> tuple[Upload, int]:
        return await self._open_completed(await self.get(owner, upload_id, with_chunks=False))

    async def _open_completed(self, upload: Upload) -> tuple[Upload, int]:
        if upload.status != COMPLETED or not upload.storage_key:
            raise not_found(upload.upload_id)
        size = await self.storage.file_size(upload.storage_key)
        if size is None:
            size = await self.merges.republish(upload)
        return upload, size

    async def download_link(self, owner: str, upload_id: str,
                            expires_in: int | None) -> dict[str, Any]:
        """A link to the completed file that needs no bearer token until it
        expires (links.py says what it is bound to)."""
        upload, _ = await self.open_download(owner, upload_id)
        link = self.links.sign(upload_id, owner, expires_in)
        return {"url": f"/files/{upload_id}?expires={link.expires}&signature={link.signature}",
                "expires_in": link.expires_in,
                "expires_at": isoformat(datetime.fromtimestamp(link.expires, timezone.utc))}

    async def open_link(self, upload_id: str, expires: int,
                        signature: str) -> tuple[Upload, int]:
        """The upload a signed link opens (as open_download does for its owner)."""
        upload = await self.store.get_upload(upload_id, with_chunks=False) \
            if is_upload_id(upload_id) else None
        if upload is None:
            raise invalid_link()  # as for a forged link: existence is not leaked
        self.links.check(upload_id, upload.owner, expires, signature)
        return await self._open_completed(upload)

    async def download_url(self, upload: Upload, content_disposition: str) -> str | None:
        """Where to redirect a download (a presigned object URL), or None."""
        if self.features.downloads is None or not upload.storage_key:
            return None
        return await self.features.downloads.download_url(upload.storage_key,
                                                          content_disposition)

    def read_file(self, upload: Upload, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) of a completed upload's file (open_download first)."""
        assert upload.storage_key
        return self.storage.read_file(upload.storage_key, start, end)
