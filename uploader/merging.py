"""The merge saga: one merge per upload, across instances, crash or not.

``complete`` starts (or joins) a merge here and waits for it a while. A merge:

1. holds the upload's lock (chunk commits take it too, so no chunk changes
   under a running merge);
2. ``begin_merge`` sets ``merging`` and bumps ``merge_version``: the fencing
   token. A paused process can outlive its lock; its later writes are refused
   because they name an old version;
3. lets the storage build a staged file from the recorded chunks, hashing it;
4. records the outcome with ``finish_merge(..., version)``: only the newest
   version's outcome lands (``_record_completed`` re-reads the row when the
   database's answer was lost);
5. publishes the staged file under its final key, then drops the chunks.

A crash between 4 and 5 leaves a ``completed`` row and a staged file:
``republish`` (from a download, or recovery at start and before each sweep)
publishes it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from . import event_model as events
from .concat import concat_parts
from .config import Config
from .errors import Unavailable, UploadError, not_found
from .event_model import Event
from .events.recorder import EventLog
from .features import Features
from .locks.names import UploadLocks
from .merge_outcome import await_outcome
from .metrics import Metrics
from .models import ABORTED, COMPLETED, FAILED, IN_PROGRESS, MERGING, Upload, utcnow
from .storage.base import MissingChunkData, StagedFile, Storage
from .store.base import MetadataStore

if TYPE_CHECKING:  # the Redis client is imported only where the queue is on
    from .merge_queue import RedisMergeQueue

log = logging.getLogger("uploader.merge")
MAX_MISSING_LISTED = 1000
# Re-reads (and the pause between them) of a row whose merge outcome is
# unknown: a database blip settles at once, a long outage is left to recovery.
SETTLE_ATTEMPTS, SETTLE_PAUSE = 3, 1.0
QUEUE_POLL = 0.2  # seconds between looks at a queued merge someone waits for


def incomplete(missing: list[int], message: str) -> UploadError:
    return UploadError("incomplete", message, missing=missing[:MAX_MISSING_LISTED],
                       missing_count=len(missing))


def nothing_to_merge(upload_id: str, upload: Upload | None) -> Upload | None:
    """The upload when it is already completed (nothing to merge), None when
    it may be merged; raises when it may not (gone: 404, aborted: 409)."""
    if upload is None:
        raise not_found(upload_id)
    if upload.status == ABORTED:
        raise UploadError("conflict", "upload is aborted", status=ABORTED)
    return upload if upload.status == COMPLETED else None


def check_complete(upload: Upload) -> None:
    if upload.tus is not None:  # tus rules (docs/tus.md)
        if not upload.size_known:
            raise UploadError("incomplete", "the upload's length is not declared yet")
        if upload.tus.concat == "partial":
            raise UploadError("conflict", "a partial upload is completed by its final upload")
    missing = upload.missing()
    if missing:
        raise incomplete(missing, f"{len(missing)} chunks missing")


class Merges:
    def __init__(self, config: Config, store: MetadataStore, storage: Storage,
                 locks: UploadLocks, features: Features, metrics: Metrics,
                 events: EventLog, queue: RedisMergeQueue | None = None,
                 take_jobs: bool = True) -> None:
        self.config = config
        self.store = store
        self.storage = storage
        self.locks = locks
        self.features = features
        self.metrics = metrics
        self.events = events
        # merge.queue redis: complete queues a job and waits for its outcome;
        # this process merges only jobs it takes (when take_jobs).
        self.queue = queue
        self.take_jobs = take_jobs
        # complete calls here waiting for a queued merge, per upload.
        self._waiters: dict[str, asyncio.Task[Upload]] = {}
        # Merges running in this process, so a second complete joins the
        # first instead of queueing behind its lock.
        self._tasks: dict[str, asyncio.Task[Upload]] = {}
        self._progress: dict[str, int] = {}

    def running(self, upload_id: str) -> bool:
        """A merge of it runs here, or a complete here waits for its job."""
        return upload_id in self._tasks or upload_id in self._waiters

    async def wait_one(self, upload_id: str) -> None:
        """Until the merge of the upload (if any) has ended: this process's,
        or with the merge queue its open job, wherever it runs."""
        task = self._tasks.get(upload_id)
        if task is not None:
            await asyncio.wait([task])
            return
        # The job's progress key goes when the job has an outcome.
        while self.queue is not None and await self.queue.progress(upload_id) is not None:
            row = await self.store.get_upload(upload_id, with_chunks=False)
            if row is None or row.status in (COMPLETED, ABORTED):
                return
            await asyncio.sleep(QUEUE_POLL)  # polling the queue, not synchronising a test

    def progress(self, upload_id: str) -> int | None:
        """Bytes merged so far by a merge running here (None: none runs).
        Until the merge takes the incremental fold over (and hears its
        progress), the bytes the fold has merged."""
        merged = self._progress.get(upload_id)
        if merged is None:
            return None
        return max(merged, self.merged_ahead(upload_id))

    def merged_ahead(self, upload_id: str) -> int:
        """Bytes the incremental fold already merged before complete."""
        inc = self.features.incremental
        return inc.merged_ahead(upload_id) if inc is not None else 0

    async def shown(self, upload: Upload) -> Upload:
        """``upload`` as a status read shows it: with a job open in the queue
        (waiting or running on any instance) it is ``merging``, with the
        bytes merged so far."""
        if self.queue is None or upload.upload_id in self._progress \
                or upload.status not in (IN_PROGRESS, FAILED, MERGING):
            return upload
        merged = await self.queue.progress(upload.upload_id)
        if merged is None:
            return upload
        return upload.replace(status=MERGING, merged_bytes=merged)

    async def queue_depth(self) -> int | None:
        """Open jobs in the merge queue (None: no queue, or Redis away)."""
        return await self.queue.depth() if self.queue is not None else None

    def start(self, upload_id: str, md5: str | None) -> "asyncio.Task[Upload]":
        """The merge of this upload for ``complete``: run here (merge.queue
        memory), or queued for any worker and awaited here until
        ``merge.wait_seconds`` (then the task raises TimeoutError: 202)."""
        if self.queue is None:
            return self.run_here(upload_id, md5)
        task = self._waiters.get(upload_id)
        if task is None:
            task = asyncio.create_task(self._queued(upload_id, md5))
            self._waiters[upload_id] = task
            task.add_done_callback(lambda t: self._waited(upload_id, t))
        return task

    async def _queued(self, upload_id: str, md5: str | None) -> Upload:
        assert self.queue is not None
        before = await self.store.get_upload(upload_id, with_chunks=False)
        if done := nothing_to_merge(upload_id, before):
            return done
        assert before is not None
        await self.queue.submit(upload_id, md5)
        deadline = asyncio.get_running_loop().time() + self.config.merge.wait_seconds
        return await await_outcome(self.store, before, deadline)

    def _waited(self, upload_id: str, task: "asyncio.Task[Upload]") -> None:
        self._waiters.pop(upload_id, None)
        if not task.cancelled():
            task.exception()  # seen by complete, or it answered 202: nothing to log

    def take_jobs_now(self) -> None:
        """Start taking jobs from the queue (when this process merges)."""
        if self.queue is None:
            return
        if self.take_jobs:
            self.queue.start(self._run_job, self.progress)
        else:
            log.info("merge.workers is external: merges of this instance's completes run "
                     "in `uploader worker` processes")

    async def _run_job(self, upload_id: str, md5: str | None) -> Upload:
        return await self.run_here(upload_id, md5)

    def run_here(self, upload_id: str, md5: str | None) -> "asyncio.Task[Upload]":
        """The merge of this upload running in this process, started if none is."""
        task = self._tasks.get(upload_id)
        if task is None:
            # Progress shows from the start (status may already say merging
            # before the task reaches the storage merge).
            self._progress[upload_id] = 0
            task = asyncio.create_task(self.metrics.time_merge(self._merge(upload_id, md5)))
            self._tasks[upload_id] = task
            task.add_done_callback(lambda t: self._done(upload_id, t))
        return task

    def _done(self, upload_id: str, task: "asyncio.Task[Upload]") -> None:
        self._tasks.pop(upload_id, None)
        self._progress.pop(upload_id, None)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, UploadError):
                log.error("merge of %s failed", upload_id, exc_info=exc)

    async def _merge(self, upload_id: str, md5: str | None) -> Upload:
        async with self.locks.upload(upload_id) as held:
            upload = await self.store.get_upload(upload_id)
            if done := nothing_to_merge(upload_id, upload):
                return done
            assert upload is not None
            # MERGING here means its merger died or lost the lock: we hold
            # the lock now, and bumping the version fences the old merger out.
            version = await self.store.begin_merge(upload_id, (IN_PROGRESS, FAILED, MERGING))
            if version is None:
                raise UploadError("conflict", "upload changed during complete")
            # Chunk records are frozen from here on (record_chunk needs
            # in_progress), so these are the ones the merge uses.
            upload = await self.store.get_upload(upload_id)
            assert upload is not None
            if upload.missing():
                await self.store.finish_merge(upload_id, version, status=IN_PROGRESS)
                check_complete(upload)
            upload.chunks = await self.store.get_chunks(upload_id)
            if self.features.direct is not None:  # what each part URL was signed for
                upload.signed_parts = await self.store.signed_parts(upload_id)
            return await self._merge_locked(upload, version, md5 or upload.md5, held.token)

    async def _merge_locked(self, upload: Upload, version: int, expected: str | None,
                            lock_token: int | None = None) -> Upload:
        upload_id = upload.upload_id
        # Operators (and the multi-instance tests) count merges by this line.
        # The lock's own fencing token (etcd: the lock key's revision) ties
        # the merge to the lock service's history; merge_version stays the
        # fence that the database enforces.
        token = f" lock token {lock_token}" if lock_token is not None else ""
        log.info("merge started %s version %d%s", upload_id, version, token)
        self._progress[upload_id] = 0

        def progress(merged: int) -> None:  # called from the I/O thread
            self._progress[upload_id] = merged

        try:
            if upload.tus is not None and upload.tus.parts:  # a tus final: its partials' bytes
                staged = await concat_parts(self.store, self.storage, self.locks, upload,
                                            version, progress)
            else:
                staged = await self.storage.merge(upload, version, progress)
        except MissingChunkData as exc:
            # Fence first: a stale merger finds the chunks gone because the
            # new owner published and deleted them; it must not touch the
            # records of an upload it no longer owns.
            missing = incomplete(exc.indices, "chunk data missing, send these chunks again")
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
            # complete (or the queue) merges again.
            await asyncio.shield(self.store.finish_merge(
                upload_id, version, status=IN_PROGRESS,
                error={"code": "internal", "message": "merge interrupted"}))
            raise
        except BaseException:
            await asyncio.shield(self._merge_failed(
                upload, version, UploadError("internal", "merge failed")))
            raise
        # staged.md5 None: verified by its parts, never hashed whole (with_claim).
        if expected and staged.md5 is not None and staged.md5 != expected:
            await self.storage.discard(staged)
            error = UploadError("checksum_mismatch", "file MD5 differs from the one given",
                                expected=expected, actual=staged.md5)
            await self._merge_failed(upload, version, error)
            raise error
        staged = staged.with_claim(expected)
        now = utcnow()
        done_event = self.events.make(events.COMPLETED, upload.replace(
            status=COMPLETED, md5=staged.md5, storage_key=staged.key, error=None,
            updated_at=now, verified=staged.verified))
        if not await self._record_completed(upload_id, version, staged, done_event, now):
            # A newer merger took over while we were paused: its result wins.
            # Only our own version-named staged file goes; the rest is theirs.
            await self.storage.discard(staged)
            log.warning("merge superseded %s version %d: a newer merge took over, "
                        "our result is discarded", upload_id, version)
            raise UploadError("conflict", "merge superseded by a newer one")
        self.events.written(done_event)
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
        event = self.events.make(events.FAILED, upload.replace(status=IN_PROGRESS, error=doc,
                                                               updated_at=now))
        applied = await self.store.finish_merge(upload.upload_id, version, status=IN_PROGRESS,
                                                error=doc, event=event, at=now)
        if applied:
            self.events.written(event)
        return applied

    async def _record_completed(self, upload_id: str, version: int, staged: StagedFile,
                                event: Event | None = None, at: datetime | None = None) -> bool:
        """finish_merge(completed) for ``version``, with its event: True when
        the database holds this result, False when a newer merge fenced it out.

        ``finish_merge`` raising Unavailable does not mean it failed: the
        UPDATE may have committed before the connection broke. Discarding the
        staged file then could leave a ``completed`` row with no file behind
        it, so the row is read back first. Still unreadable: Unavailable goes
        up and the staged file stays (``republish`` publishes it if the row
        says completed; else the next complete merges again and it ages out).
        """
        store = self.store
        try:
            return await store.finish_merge(upload_id, version, status=COMPLETED,
                                            md5=staged.md5, storage_key=staged.key,
                                            event=event, at=at, verified=staged.verified)
        except Unavailable:
            log.warning("finish_merge of %s version %d: outcome unknown, re-reading",
                        upload_id, version)
        for attempt in range(SETTLE_ATTEMPTS):
            try:
                current = await store.get_upload(upload_id, with_chunks=False)
                if current is None or current.merge_version != version:
                    return False
                if current.status == COMPLETED:
                    return current.storage_key == staged.key
                if current.status != MERGING:
                    return False
                # Still ours and merging: it did not apply (nor did its
                # event); fenced, so retry it.
                return await store.finish_merge(upload_id, version, status=COMPLETED,
                                                md5=staged.md5, storage_key=staged.key,
                                                event=event, at=at, verified=staged.verified)
            except Unavailable:
                if attempt == SETTLE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(SETTLE_PAUSE)
        raise AssertionError("unreachable")

    async def republish(self, upload: Upload) -> int:
        """The merge recorded ``completed`` but its process died before
        publishing the staged file: publish it now; returns the file's size."""
        assert upload.storage_key
        staged = StagedFile(upload.upload_id, upload.merge_version, upload.storage_key,
                            upload.md5 or "", upload.size)
        async with self.locks.upload(upload.upload_id):
            if await self.storage.staged_exists(staged):
                await self.storage.publish(staged)
                await self.storage.delete_chunks(upload.upload_id)
        size = await self.storage.file_size(upload.storage_key)
        if size is None:
            log.error("completed upload %s has no file at %s", upload.upload_id,
                      upload.storage_key)
            raise UploadError("internal", "stored file is missing")
        return size

    async def wait(self, timeout: float) -> bool:
        """At shutdown: take no more jobs, and let merges running in the
        background (complete answered 202, or taken from the queue) finish,
        for at most ``timeout`` seconds; True when none is left."""
        if self.queue is not None:
            self.queue.stop_taking()
        tasks = list(self._tasks.values())
        if tasks and timeout > 0:
            await asyncio.wait(tasks, timeout=timeout)
        return all(task.done() for task in tasks)

    async def shutdown(self) -> None:
        if self.queue is not None:
            # Jobs cut here stay pending: another worker takes them after the TTL.
            await self.queue.close()
        tasks = [*self._tasks.values(), *self._waiters.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
