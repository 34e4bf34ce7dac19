"""Rules of direct uploads: clients PUT chunk bytes straight to the object
store through presigned URLs (``s3.direct``), so the store, not the client, is
the truth about which chunks arrived. Like the service, no HTTP and no SQL.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Sequence

from .errors import UploadError
from .models import IN_PROGRESS, ChunkRecord, Upload
from .storage.base import PresignedUploads
from .store.base import MetadataStore

_MD5_RE = re.compile(r"\A[0-9a-f]{32}\Z")


# Parts one POST /upload/{id}/urls may presign: bounds the work and the
# answer of one request; clients ask for a window ahead of what they send.
MAX_PART_URLS = 100


async def presign_parts(store: MetadataStore, storage: PresignedUploads, upload: Upload,
                        parts: Sequence[tuple[int, str | None]]) -> list[dict[str, Any]]:
    """One ``{"index", "size", "url", "method", "headers", "expires_in"}`` per
    (index, md5). Refused once the upload no longer takes chunks: merging
    (409, retryable: the merge may fail and reopen it), completed or aborted,
    or its multipart upload already assembled or gone (409, final). An
    upload verified by its parts needs every MD5: it is signed into the URL
    and recorded, and complete checks the part S3 holds against it."""
    if upload.status != IN_PROGRESS:
        raise UploadError("conflict", f"upload is {upload.status}", status=upload.status)
    by_parts = storage.verifies_parts(upload)
    for index, md5 in parts:
        if not 0 <= index < upload.total_chunks:
            raise UploadError("invalid_request", "index out of range", index=index,
                              total_chunks=upload.total_chunks)
        if by_parts and md5 is None:
            raise UploadError("invalid_request", "md5 is required: this upload is verified by "
                              "its parts' MD5s", index=index)
    # A direct merge assembles the object before it can hash it: after a
    # refused MD5 the upload is in_progress again but takes no more parts.
    if not await storage.parts_open(upload):
        raise UploadError("conflict", "the object store no longer takes parts for this upload "
                          "(already assembled or removed): start a new upload",
                          status=upload.status, retryable=False)
    signed = [{"index": index, "size": upload.chunk_length(index),
               **await storage.presign_part(upload, index, md5)} for index, md5 in parts]
    if by_parts:  # recorded before any URL is handed out
        await store.record_signed_parts(upload.upload_id, [(i, m) for i, m in parts if m])
    return signed


async def sync_parts(store: MetadataStore, storage: PresignedUploads, upload: Upload) -> Upload:
    """Chunk records := the parts the object store holds with the right size
    (a client's word about a direct PUT is never taken)."""
    parts = await storage.list_parts(upload)
    if parts is None:  # completed by an earlier merge: the records stand
        return upload
    held = {p.index: p for p in parts
            if 0 <= p.index < upload.total_chunks and p.size == upload.chunk_length(p.index)}
    records = {c.index: c for c in await store.get_chunks(upload.upload_id)}
    changed = False
    for index, part in held.items():
        # The ETag is the part's MD5 except under SSE-KMS/SSE-C; then a
        # stable stand-in that still changes when the part does.
        md5 = part.etag if _MD5_RE.match(part.etag) else hashlib.md5(
            part.etag.encode()).hexdigest()
        if index not in records or records[index].md5 != md5:
            changed |= await store.record_chunk(
                upload.upload_id, ChunkRecord(index=index, size=part.size, md5=md5))
    for index in records.keys() - held.keys():
        await store.delete_chunk(upload.upload_id, index)
        changed = True
    if not changed:
        return upload
    return await store.get_upload(upload.upload_id) or upload
