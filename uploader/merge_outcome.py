"""Waiting for a merge's outcome in the database, wherever it runs (this
instance, another one, a worker of the Redis merge queue). Kept apart from
``merge_queue.py`` so that a server without Redis never imports the client."""

from __future__ import annotations

import asyncio

from .errors import ERRORS, UploadError, not_found
from .models import ABORTED, COMPLETED, MERGING, Upload
from .store.base import MetadataStore


async def await_outcome(store: MetadataStore, before: Upload, deadline: float) -> Upload:
    """Poll the row until a merge newer than ``before`` has an outcome: the
    completed upload, or its refusal raised as the error it recorded. Raises
    ``asyncio.TimeoutError`` at ``deadline`` (loop time): complete answers 202."""
    loop = asyncio.get_running_loop()
    pause = 0.02
    while True:
        await asyncio.sleep(pause)  # polling the database, not synchronising a test
        row = await store.get_upload(before.upload_id, with_chunks=False)
        if row is None:
            raise not_found(before.upload_id)
        if row.status == COMPLETED:
            return row
        if row.status == ABORTED:
            raise UploadError("conflict", "upload is aborted", status=ABORTED)
        # A newer merge that ended without completing. No error recorded: its
        # worker died and recovery reset it; the job is still open, so wait.
        if row.status != MERGING and row.merge_version > before.merge_version and row.error:
            raise recorded_error(row)
        if loop.time() >= deadline:
            raise asyncio.TimeoutError
        pause = min(pause * 2, 0.5)


def recorded_error(upload: Upload) -> UploadError:
    """The refusal a merge recorded in the row, as the error it raised."""
    doc = dict(upload.error or {})
    code = str(doc.pop("code", "internal"))
    message = str(doc.pop("message", "merge failed"))
    retryable = doc.pop("retryable", None)
    if code not in ERRORS:
        code = "internal"
    return UploadError(code, message, retryable=retryable if isinstance(retryable, bool)
                       else None, **doc)
