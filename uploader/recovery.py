"""Putting things right after a crash, at start and before each sweep.

Two leftovers need the database to be understood, so they are settled here
rather than by the storage alone:

- a merge that recorded ``completed`` but died before renaming its staged
  file into place: the staged file is the one the row promises, so it is
  published (and must not be swept away as a stray ``.part``);
- an upload left ``merging`` by a dead process: back to ``in_progress``, so
  the client's next complete merges again. A merge alive on another instance
  holds the upload's lock and is left alone.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .locks.base import LockTimeout
from .models import COMPLETED, IN_PROGRESS, MERGING

if TYPE_CHECKING:
    from .service import UploadService

log = logging.getLogger("uploader.recovery")


async def publish_recorded_merges(service: "UploadService") -> int:
    staged = service.features.staged
    if staged is None:  # a backend without staged files (S3 completes in place)
        return 0
    published = 0
    for upload_id, version in await staged.staged_uploads():
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
        except LockTimeout:
            continue
    return returned
