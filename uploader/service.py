"""UploadService: every rule of an upload's life (no HTTP, no SQL, no paths).

Handlers call it; it calls the metadata store, the storage and the locks
through their interfaces. All failures it raises are ``UploadError`` codes
from the one error table.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from concurrent.futures import Executor
from typing import Any, Callable, Mapping

from . import capabilities
from .config import Config
from .errors import UploadError, not_found
from .events import model as events
from .fence import record_completed
from .hooks import PreCreateHook
from .locks.base import Locks, LockTimeout
from .metadata import check_metadata
from .metrics import Metrics
from .models import (ABORTED, COMPLETED, FAILED, IN_PROGRESS, MERGING, ChunkRecord, Upload,
                     chunk_count, utcnow)
from .naming import is_upload_id, new_upload_id, sanitize_filename
from .quota import QuotaGuard
from .receiver import ChunkReceiver
from .storage.base import (IncrementalMerge, PresignedDownloads, PresignedUploads, StagedFile,
                           Storage, UploadHooks)
from .storage.local import MissingChunkData
from .store.base import MetadataStore

log = logging.getLogger("uploader.service")
MD5_RE = re.compile(r"\A[0-9a-f]{32}\Z")
MAX_MISSING_LISTED = 1000
META_CACHE_SIZE = 10_000  # uploads whose immutable metadata a process remembers


def check_md5(value: Any, field: str = "md5") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not MD5_RE.match(value.lower()):
        raise UploadError("invalid_request", f"{field} must be 32 hexadecimal characters")
    return value.lower()


def _int_field(body: dict, name: str, *, required: bool) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise UploadError("invalid_request", f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UploadError("invalid_request", f"{name} must be an integer")
    return value


def init_arguments(body: Any) -> dict[str, Any]:
    """The JSON body of ``POST /upload/init`` -> keyword arguments of
    :meth:`UploadService.create` (shapes and types only; the rules are the
    service's)."""
    if not isinstance(body, dict):
        raise UploadError("invalid_request", "body must be a JSON object")
    filename = body.get("filename")
    if not isinstance(filename, str):
        raise UploadError("invalid_request", "filename must be a non-empty string")
    size = _int_field(body, "size", required=True)
    assert size is not None
    return {"filename": filename, "size": size,
            "chunk_size": _int_field(body, "chunk_size", required=False),
            "md5": check_md5(body.get("md5")),
            "metadata": check_metadata(body.get("metadata"))}


class UploadService:
    def __init__(self, config: Config, store: MetadataStore, storage: Storage, locks: Locks,
                 executor: Executor, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics(process=False)
        self.store = store
        self.storage = storage
        self.locks = locks
        self.executor = executor
        # Merges running in this process, so a second complete joins the
        # first instead of queueing behind its lock.
        self._merges: dict[str, asyncio.Task[Upload]] = {}
        self._merge_progress: dict[str, int] = {}
        self.quota = QuotaGuard(config, store, storage)
        # Clients may PUT chunks straight to the object store: advertised in
        # every upload object, and the store's part list is then the truth.
        self.direct = isinstance(storage, PresignedUploads) and storage.direct
        # Immutable metadata (owner, sizes) of in_progress uploads seen here,
        # so a chunk PUT needs no lookup before its body: the status is checked
        # atomically by record_chunk anyway. Evicted on any change seen here.
        self._meta: OrderedDict[str, Upload] = OrderedDict()
        # Called after a change whose event committed (the dispatcher wakes
        # up at once instead of at its next poll).
        self.on_event: Callable[[events.Event], None] = lambda event: None
        # The blocking pre-create hook, when hooks.pre_create_url is set.
        self.pre_create: PreCreateHook | None = None

    def event(self, event_type: str, upload: Upload) -> events.Event | None:
        """The event reporting ``upload`` as it is after a change (None when
        events are off); the store writes it with the change."""
        if not self.config.events.enabled:
            return None
        return events.make_event(event_type, upload, self.to_json(upload), upload.updated_at)

    def written(self, event: events.Event | None) -> None:
        if event is not None:
            self.metrics.events_written.labels(event.type).inc()
            self.on_event(event)

    def _forget(self, upload_id: str) -> None:
        self._meta.pop(upload_id, None)

    # -- reading ---------------------------------------------------------

    def to_json(self, upload: Upload) -> dict[str, Any]:
        doc = upload.to_json(self.config.expiry.ttl if self.config.expiry.enabled else None)
        if upload.status == MERGING and upload.upload_id in self._merge_progress:
            doc["merged_bytes"] = self._merge_progress[upload.upload_id]
        if self.direct:
            doc["direct"] = True
        return doc

    async def get(self, owner: str, upload_id: str, *, with_chunks: bool = True) -> Upload:
        if not is_upload_id(upload_id):
            raise not_found(upload_id)
        upload = await self.store.get_upload(upload_id, with_chunks=with_chunks)
        # Another owner's upload is indistinguishable from a missing one.
        if upload is None or upload.owner != owner:
            raise not_found(upload_id)
        if with_chunks and self.direct and upload.status == IN_PROGRESS:
            upload = await capabilities.sync_parts(self.store, self.storage, upload)
        return upload

    async def list(self, owner: str, *, status: str | None, filename: str | None,
                   metadata: Mapping[str, str] | None = None) -> list[Upload]:
        if status is not None and status not in (IN_PROGRESS, MERGING, COMPLETED, FAILED, ABORTED):
            raise UploadError("invalid_request", "unknown status filter")
        return await self.store.list_uploads(owner, status=status or None,
                                             filename=filename or None,
                                             metadata=metadata or None)

    # -- init --------------------------------------------------------------

    async def create(self, owner: str, *, filename: str, size: int, chunk_size: int | None = None,
                     md5: str | None = None, metadata: dict[str, str] | None = None,
                     headers: Mapping[str, str] | None = None) -> Upload:
        """A new upload. ``headers`` are the request's, for the pre-create
        hook (which sees only its allow-listed ones)."""
        limits = self.config.limits
        if not filename.strip():
            raise UploadError("invalid_request", "filename must be a non-empty string")
        if len(filename) > 4096:
            raise UploadError("invalid_request", "filename is too long")
        if size < 0:
            raise UploadError("invalid_request", "size must be >= 0")
        if size > limits.max_file_size:
            raise UploadError("too_large", "file is larger than the server accepts",
                              max_file_size=limits.max_file_size)
        chunk_size = chunk_size or limits.chunk_size_default
        if not limits.chunk_size_min <= chunk_size <= limits.chunk_size_max:
            raise UploadError("invalid_request", "chunk_size out of range",
                              chunk_size_min=limits.chunk_size_min,
                              chunk_size_max=limits.chunk_size_max)
        total = chunk_count(size, chunk_size)
        if total > limits.max_chunks:
            raise UploadError("invalid_request", "too many chunks: use a larger chunk_size",
                              max_chunks=limits.max_chunks)
        capabilities.check_part_limits(self.storage, size, chunk_size, total)
        md5 = check_md5(md5)  # callers other than the JSON API (tus) too
        metadata = check_metadata(metadata)
        if self.pre_create is not None:
            # Last, so the hook sees only requests we would accept; it may
            # change the owner and metadata, or lower the size limit.
            decision = await self.pre_create.check(
                owner=owner, filename=filename, size=size, chunk_size=chunk_size,
                metadata=metadata, headers=headers)
            owner, metadata = decision.owner, decision.metadata
            if decision.max_size is not None and size > decision.max_size:
                raise UploadError("too_large", "file is larger than this upload may be",
                                  max_file_size=decision.max_size)
        await self.quota.check_init(owner, size)
        now = utcnow()
        upload = Upload(upload_id=new_upload_id(), owner=owner,
                        filename=sanitize_filename(filename), size=size, chunk_size=chunk_size,
                        total_chunks=total, md5=md5, status=IN_PROGRESS, created_at=now,
                        updated_at=now, metadata=metadata)
        if isinstance(self.storage, UploadHooks):
            # Before the row: a row never points at backend state that was
            # not created. The reverse (an init that dies in between) leaves
            # backend state without a row, which the orphan sweep removes.
            upload.backend_state = await self.storage.create_upload(upload)
        event = self.event(events.CREATED, upload)
        await self.store.create_upload(upload, event)
        self.written(event)
        return upload

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
        if upload_id in self._merges:
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
        writer = await self.storage.open_chunk(upload, index)
        return ChunkReceiver(writer, self.executor, upload_id=upload_id, index=index,
                             total_chunks=upload.total_chunks, expected_size=expected,
                             expected_md5=md5, upload=upload,
                             max_buffered=self.config.server.max_buffered)

    async def finish_chunk(self, receiver: ChunkReceiver) -> dict[str, Any]:
        size, md5 = await receiver.finish()
        upload_id = receiver.upload_id
        try:
            # Under the upload's lock, put-in-place and record are one step
            # against merges (which take the same lock) and against another
            # writer of the same chunk: the file on disk and its record can
            # never disagree, and no chunk changes under a running merge.
            # Other commits hold it for milliseconds; a merge may hold it for
            # long: after a lock TTL's wait the answer is 409, retryable.
            async with self.locks.lock(f"merge:{upload_id}", ttl=self.config.locks.ttl,
                                       wait=self.config.locks.ttl):
                # A merge may have finished (or a delete run) before we got the
                # lock: never rename into an upload that is no longer open.
                current = await self.store.get_upload(upload_id, with_chunks=False)
                if current is None or current.status != IN_PROGRESS:
                    self._forget(upload_id)
                    if current is None or current.status == ABORTED:
                        raise not_found(upload_id)
                    raise UploadError("conflict", f"upload is {current.status}",
                                      status=current.status)
                await receiver.commit()
                # The upsert (which checks the status atomically) and the count
                # in one unit of work.
                count = await self.store.record_chunk_counted(
                    upload_id, ChunkRecord(index=receiver.index, size=size, md5=md5))
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
        if isinstance(self.storage, IncrementalMerge) and receiver.upload is not None:
            self.storage.chunk_stored(receiver.upload, receiver.index, md5, receiver.writer)
        return {"index": receiver.index, "size": size, "md5": md5,
                "received_chunks": count,
                "total_chunks": receiver.total_chunks}

    # -- direct uploads ----------------------------------------------------

    async def presign_chunk(self, owner: str, upload_id: str, index: int,
                            body: Any) -> dict[str, Any]:
        if not self.direct:
            raise UploadError("not_found", "direct uploads are not enabled")
        if body is not None and not isinstance(body, dict):
            raise UploadError("invalid_request", "body must be a JSON object")
        md5 = check_md5((body or {}).get("md5"))
        upload = await self.get(owner, upload_id, with_chunks=False)
        return await capabilities.presign_chunk(self.storage, upload, index, md5)

    # -- complete ----------------------------------------------------------

    async def complete(self, owner: str, upload_id: str, body: Any) -> tuple[Upload, bool]:
        """Returns (upload, finished). Not finished: the merge goes on in the
        background and the caller answers 202."""
        if body is not None and not isinstance(body, dict):
            raise UploadError("invalid_request", "body must be a JSON object")
        md5 = check_md5((body or {}).get("md5"))
        self._forget(upload_id)
        upload = await self.get(owner, upload_id)
        if upload.status == COMPLETED:
            return self._already_completed(upload, md5), True
        if upload.status == ABORTED:
            raise UploadError("conflict", "upload is aborted", status=ABORTED)
        if upload.status != MERGING:
            self._check_complete(upload)
        wait = self.config.merge.wait_seconds
        if isinstance(self.storage, IncrementalMerge):
            left = upload.size - self.storage.merged_ahead(upload_id)
            if left > self.config.merge.background_over:
                wait = 0  # much left: answer 202 now, status shows merged_bytes
        task = self._merges.get(upload_id)
        if task is None:
            # Progress shows from the start (status may already say merging
            # before the task reaches the storage merge).
            self._merge_progress[upload_id] = 0
            task = asyncio.create_task(self.metrics.time_merge(self._merge(upload_id, md5)))
            self._merges[upload_id] = task
            task.add_done_callback(lambda t: self._merge_done(upload_id, t))
        try:
            merged = await asyncio.wait_for(asyncio.shield(task), wait)
        except asyncio.TimeoutError:
            current = await self.get(owner, upload_id)
            if current.status in (IN_PROGRESS, FAILED) and not task.done():
                # Accepted but its task has not reached begin_merge yet.
                current = current.replace(status=MERGING)
            return current, False
        return self._already_completed(merged, md5), True

    def _merge_done(self, upload_id: str, task: "asyncio.Task[Upload]") -> None:
        self._merges.pop(upload_id, None)
        self._merge_progress.pop(upload_id, None)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, UploadError):
                log.error("merge of %s failed", upload_id, exc_info=exc)

    @staticmethod
    def _already_completed(upload: Upload, md5: str | None) -> Upload:
        if md5 and upload.md5 and md5 != upload.md5:
            raise UploadError("checksum_mismatch", "the completed file has a different MD5",
                              expected=md5, actual=upload.md5)
        return upload

    @staticmethod
    def _check_complete(upload: Upload) -> None:
        missing = upload.missing()
        if missing:
            raise UploadError("incomplete", f"{len(missing)} chunks missing",
                              missing=missing[:MAX_MISSING_LISTED], missing_count=len(missing))

    async def _merge(self, upload_id: str, md5: str | None) -> Upload:
        async with self.locks.lock(f"merge:{upload_id}", ttl=self.config.locks.ttl):
            upload = await self.store.get_upload(upload_id)
            if upload is None:
                raise not_found(upload_id)
            if upload.status == COMPLETED:
                return upload
            if upload.status == ABORTED:
                raise UploadError("conflict", "upload is aborted", status=ABORTED)
            # MERGING here means its merger died or lost the lock: we hold
            # the lock now, and bumping the version fences the old merger out.
            version = await self.store.begin_merge(upload_id, (IN_PROGRESS, FAILED, MERGING))
            if version is None:
                raise UploadError("conflict", "upload changed during complete")
            # Chunk records are frozen from here on (record_chunk needs
            # in_progress), so this list is the one the merge uses.
            upload = await self.store.get_upload(upload_id)
            assert upload is not None
            if upload.missing():
                await self.store.finish_merge(upload_id, version, status=IN_PROGRESS)
                self._check_complete(upload)
            return await self._merge_locked(upload, version, md5 or upload.md5)

    async def _merge_locked(self, upload: Upload, version: int, expected: str | None) -> Upload:
        upload_id = upload.upload_id
        # Operators (and the multi-instance tests) count merges by this line.
        log.info("merge started %s version %d", upload_id, version)
        self._merge_progress[upload_id] = 0

        def progress(merged: int) -> None:  # called from the I/O thread
            self._merge_progress[upload_id] = merged

        try:
            if isinstance(self.storage, IncrementalMerge):
                # The records are frozen now (status merging): what was folded
                # ahead is used only if it matches them.
                chunks = await self.store.get_chunks(upload_id)
                staged = await self.storage.merge(upload, version, progress, chunks=chunks)
            else:
                staged = await self.storage.merge(upload, version, progress)
        except MissingChunkData as exc:
            # Fence first: a stale merger finds the chunks gone because the
            # new owner published and deleted them; it must not touch the
            # records of an upload it no longer owns.
            missing = UploadError("incomplete", "chunk data missing, send these chunks again",
                                  missing=exc.indices[:MAX_MISSING_LISTED],
                                  missing_count=len(exc.indices))
            if not await self._merge_failed(upload, version, missing):
                log.warning("merge superseded %s version %d: chunks gone, a newer merge "
                            "took over", upload_id, version)
                raise UploadError("conflict", "merge superseded by a newer one") from None
            # Recorded chunks whose bytes vanished: forget them so the client
            # sends them again, rather than merging a hole.
            for index in exc.indices:
                await self.store.delete_chunk(upload_id, index)
            raise missing from None
        except UploadError as exc:
            await self._merge_failed(upload, version, exc)
            raise
        except asyncio.CancelledError:
            # Shutdown: not a failure of the upload, no event; the next
            # complete merges again.
            await asyncio.shield(self.store.finish_merge(
                upload_id, version, status=IN_PROGRESS,
                error={"code": "internal", "message": "merge interrupted"}))
            raise
        except BaseException:
            await asyncio.shield(self._merge_failed(
                upload, version, UploadError("internal", "merge failed")))
            raise
        if expected and staged.md5 != expected:
            await self.storage.discard(staged)
            error = UploadError("checksum_mismatch", "file MD5 differs from the one given",
                                expected=expected, actual=staged.md5)
            await self._merge_failed(upload, version, error)
            raise error
        now = utcnow()
        done_event = self.event(events.COMPLETED, upload.replace(
            status=COMPLETED, md5=staged.md5, storage_key=staged.key, error=None,
            updated_at=now))
        if not await record_completed(self.store, upload_id, version, staged, done_event, now):
            # A newer merger took over while we were paused: its result wins.
            # Only our own version-named staged file goes; the rest is theirs.
            await self.storage.discard(staged)
            log.warning("merge superseded %s version %d: a newer merge took over, "
                        "our result is discarded", upload_id, version)
            raise UploadError("conflict", "merge superseded by a newer one")
        self.written(done_event)
        await self.storage.publish(staged)
        log.info("merge finished %s version %d (%d bytes)", upload_id, version, staged.size)
        try:
            await self.storage.delete_chunks(upload_id)
        except OSError:  # the file is published: leftover chunks are waste, not failure
            log.exception("could not remove the chunks of completed upload %s", upload_id)
        done = await self.store.get_upload(upload_id)
        assert done is not None
        return done

    async def _merge_failed(self, upload: Upload, version: int, error: UploadError) -> bool:
        """Back to in_progress with the error, and ``upload.failed``, if
        this merge still owns the upload (fenced)."""
        doc = error.to_json()["error"]
        now = utcnow()
        event = self.event(events.FAILED, upload.replace(status=IN_PROGRESS, error=doc,
                                                         updated_at=now))
        applied = await self.store.finish_merge(upload.upload_id, version, status=IN_PROGRESS,
                                                error=doc, event=event, at=now)
        if applied:
            self.written(event)
        return applied

    # -- delete, download --------------------------------------------------

    async def delete(self, owner: str, upload_id: str) -> None:
        self._forget(upload_id)
        upload = await self.get(owner, upload_id, with_chunks=False)
        if upload.status == MERGING:
            raise UploadError("conflict", "upload is merging", status=MERGING)
        # Aborted first: chunk records racing this delete are refused. A
        # repeated delete of an aborted row (a retry) reports nothing new.
        now = utcnow()
        event = self.event(events.DELETED, upload.replace(status=ABORTED, updated_at=now))
        if await self.store.set_status(upload_id, ABORTED, (IN_PROGRESS, FAILED, COMPLETED),
                                       event, at=now):
            self.written(event)
        else:
            await self.store.set_status(upload_id, ABORTED, (ABORTED,))
        await self.remove(upload)

    async def remove(self, upload: Upload) -> None:
        """Bytes first, then rows: a crash in between leaves a row the
        sweep finds again, never bytes nobody knows of."""
        await self.storage.delete_chunks(upload.upload_id)
        if upload.storage_key:
            await self.storage.delete_file(upload.storage_key)
        elif isinstance(self.storage, UploadHooks):
            # S3 in direct mode completes before it can hash; a refused MD5
            # leaves that object with no storage_key recorded.
            await self.storage.delete_file(self.storage.key_for(upload))
        await self.store.delete_upload(upload.upload_id)

    async def download_url(self, upload: Upload, content_disposition: str) -> str | None:
        """Where to redirect a download (a presigned object URL), or None."""
        if not isinstance(self.storage, PresignedDownloads) or not upload.storage_key:
            return None
        return await self.storage.download_url(upload.storage_key, content_disposition)

    async def open_download(self, owner: str, upload_id: str) -> tuple[Upload, int]:
        upload = await self.get(owner, upload_id, with_chunks=False)
        if upload.status != COMPLETED or not upload.storage_key:
            raise not_found(upload_id)
        size = await self.storage.file_size(upload.storage_key)
        if size is None:
            size = await self.republish(upload)
        return upload, size

    async def republish(self, upload: Upload) -> int:
        """The merge recorded ``completed`` but the process died before
        publishing the staged file: publish it now."""
        assert upload.storage_key
        staged = StagedFile(upload.upload_id, upload.merge_version, upload.storage_key,
                            upload.md5 or "", upload.size)
        async with self.locks.lock(f"merge:{upload.upload_id}", ttl=self.config.locks.ttl):
            if await self.storage.staged_exists(staged):
                await self.storage.publish(staged)
                await self.storage.delete_chunks(upload.upload_id)
        size = await self.storage.file_size(upload.storage_key)
        if size is None:
            log.error("completed upload %s has no file at %s", upload.upload_id,
                      upload.storage_key)
            raise UploadError("internal", "stored file is missing")
        return size

    # -- lifecycle ---------------------------------------------------------

    async def wait_merges(self, timeout: float) -> bool:
        """Let merges running in the background (complete answered 202)
        finish, for at most ``timeout`` seconds; True when none is left."""
        tasks = list(self._merges.values())
        if tasks and timeout > 0:
            await asyncio.wait(tasks, timeout=timeout)
        return all(task.done() for task in tasks)

    async def shutdown(self) -> None:
        tasks = list(self._merges.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
