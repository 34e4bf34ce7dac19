"""Putting things right after a crash, at start and before each sweep.

Three leftovers need the database to be understood, so they are settled
here rather than by the storage alone:

- a merge that recorded ``completed`` but died before renaming its staged
  file into place: the staged file is the one the row promises, so it is
  published (and must not be swept away as a stray ``.part``);
- an upload left ``merging`` by a dead process: back to ``in_progress``, so
  the client's next complete merges again. A merge alive on another instance
  holds the upload's lock and is left alone. A tus final upload holds no
  chunks of its own: what the storage holds of it then is its dead merge's
  (S3: the multipart upload its concat was building), removed with it;
- merged files in the making that can never be published (up to the
  upload's size each): removed at once rather than after
  ``storage.stale_part_age``, see :func:`remove_dead_merges`;
- the temp chunks of a completed upload whose merge published the file but
  died (or failed) before removing them, see :func:`remove_completed_chunks`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

from .errors import Unavailable
from .locks.base import LockTimeout
from .models import ABORTED, COMPLETED, IN_PROGRESS, MERGING, Upload
from .storage.base import PartialMerge

if TYPE_CHECKING:
    from .service import UploadService

log = logging.getLogger("uploader.recovery")


async def publish_recorded_merges(service: "UploadService") -> int:
    staged = service.features.staged
    if staged is None:  # a backend without staged files (S3 completes in place)
        return 0
    published = 0
    for partial in await staged.partial_merges():
        upload_id, version = partial.upload_id, partial.version
        if version is None:
            continue  # a fold is never published as it is
        try:
            upload = await service.store.get_upload(upload_id, with_chunks=False)
            if (upload is None or upload.status != COMPLETED or not upload.storage_key
                    or upload.merge_version != version
                    or await service.storage.file_size(upload.storage_key) is not None):
                continue
            await service.merges.republish(upload)
            published += 1
            log.info("published the recorded merge of %s version %d", upload_id, version)
        except Exception:
            log.exception("could not publish the staged merge of %s", upload_id)
    return published


async def return_interrupted_merges(service: "UploadService") -> int:
    returned = 0
    for upload in await service.store.find_by_status(MERGING):
        try:
            async with service.locks.upload(upload.upload_id, wait=0):
                if await service.store.set_status(upload.upload_id, IN_PROGRESS, (MERGING,)):
                    returned += 1
                    if upload.tus is not None and upload.tus.parts:
                        await _drop_dead_concat(service, upload.upload_id)
        except LockTimeout:
            continue
    return returned


async def _drop_dead_concat(service: "UploadService", upload_id: str) -> None:
    try:
        await service.storage.delete_chunks(upload_id)
    except Unavailable:
        raise
    except Exception:  # left to the final's removal (delete, expiry) or its next merge
        log.exception("could not remove what the interrupted merge of %s left", upload_id)


async def remove_dead_merges(service: "UploadService", *, at_start: bool) -> int:
    """Remove the staged merge files and incremental folds that can never be
    published; how many. Run after publish_recorded_merges and, at start,
    after return_interrupted_merges.

    A staged file of version v can only be published by a merger of v whose
    ``finish_merge`` finds the row ``merging`` at v, or by ``republish`` when
    the row is ``completed`` at v and its file is missing. ``merge_version``
    only grows and the files are listed before the rows are read, so any
    other row proves the file dead, with no lock and on any instance.

    A fold lives in one process's memory. At start no fold on disk is of a
    live process: incremental merges run with in-process locks only, one
    instance per data_dir, and this one has just started. Later only folds
    of uploads that are finished or gone are certain to be dead."""
    staged = service.features.staged
    if staged is None:
        return 0
    removed = 0
    rows: dict[str, Upload | None] = {}
    for partial in await staged.partial_merges():
        try:
            if partial.upload_id not in rows:
                rows[partial.upload_id] = await service.store.get_upload(
                    partial.upload_id, with_chunks=False)
            if not await _dead(service, partial, rows[partial.upload_id], at_start):
                continue
            await staged.remove_partial(partial)
            removed += 1
            log.info("removed %s of %s (%d bytes): it can never be published",
                     "the fold" if partial.version is None else f"merge version {partial.version}",
                     partial.upload_id, partial.size)
        except Unavailable:
            raise  # the database is away: nothing can be proven now
        except Exception:
            log.exception("could not check or remove %s", partial.name)
    return removed


async def _dead(service: "UploadService", partial: PartialMerge, upload: Upload | None,
                at_start: bool) -> bool:
    if upload is None or upload.status == ABORTED:
        return True  # deleted or expired: nothing publishes anything of it
    if partial.version is None:
        return at_start or upload.status == COMPLETED
    if partial.version != upload.merge_version:
        return partial.version < upload.merge_version  # superseded: fenced out
    if upload.status == MERGING:
        return False  # its merger may be alive and may still publish it
    if upload.status == COMPLETED:
        # The file the row promises, unless the published file is there.
        key = upload.storage_key
        return key is not None and await service.storage.file_size(key) is not None
    return True  # in_progress or failed: that merge ended without completing


async def remove_completed_chunks(service: "UploadService", upload_ids: Sequence[str]
                                  ) -> tuple[list[str], list[str]]:
    """Remove the temp chunks of those uploads that are ``completed`` with
    their file published; returns (ids whose chunks went, ids that failed).

    A merge publishes the file, then removes the chunks. A process killed in
    between leaves up to the upload's size in temp chunks that nothing else
    would ever remove: the orphan pass keeps folders that have a row, and
    ``republish`` acts only while a staged file waits. A completed row whose
    file is missing keeps its chunks: they may be all that is left of it."""
    done = await service.store.existing_ids(upload_ids, statuses=(COMPLETED,)) \
        if upload_ids else set()
    removed: list[str] = []
    failed: list[str] = []
    for upload_id in sorted(done):
        try:
            # republish (a download, another instance's recovery) holds it
            # while it publishes and removes these same chunks.
            async with service.locks.upload(upload_id, wait=0):
                upload = await service.store.get_upload(upload_id, with_chunks=False)
                if (upload is None or upload.status != COMPLETED or not upload.storage_key
                        or await service.storage.file_size(upload.storage_key) is None):
                    continue
                await service.storage.delete_chunks(upload_id)
            removed.append(upload_id)
            log.info("removed the leftover chunks of completed upload %s", upload_id)
        except LockTimeout:
            continue
        except Unavailable:
            raise
        except Exception:
            log.exception("could not remove the leftover chunks of %s", upload_id)
            failed.append(upload_id)
    return removed, failed
