"""The merge of a tus final upload: its partial uploads' chunks, in order,
into the final's staged file (docs/tus.md, "Concatenation").

Called by the merge saga (``merging.py``) under the final's lock and fence,
in place of ``Storage.merge``; what follows (record, publish) is the same.
Local disk: here (a kernel copy and a page-cache MD5). S3: ``concat_s3.py``
(the partials sealed into objects, the final's parts copied inside S3),
imported only when the storage is S3.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from .errors import UploadError
from .locks.names import UploadLocks
from .models import IN_PROGRESS, Upload
from .storage.base import MissingChunkData, Progress, StagedFile, Storage
from .storage.fileops import copy_range, unlink_quiet
from .storage.incremental import hash_region
from .storage.layout import FILE_MODE
from .storage.local import LocalStorage
from .store.base import MetadataStore


def concatenates(storage: object) -> bool:
    """Whether tus final uploads can be built on this storage (Features)."""
    # By name: the S3 module (and its client) is loaded only where it is used.
    return isinstance(storage, LocalStorage) or type(storage).__name__ == "S3Storage"


async def concat_parts(store: MetadataStore, storage: Storage, locks: UploadLocks,
                       final: Upload, version: int,
                       progress: Progress | None = None) -> StagedFile:
    """``locks``: a partial's own lock (S3 seals each partial under it)."""
    assert final.tus is not None
    parts: list[Upload] = []
    for upload_id in final.tus.parts:
        part = await store.get_upload(upload_id)
        if part is None or part.status != IN_PROGRESS or part.missing():
            raise UploadError("conflict", "a partial upload of this final upload is gone",
                              upload_id=upload_id)
        parts.append(part)
    if sum(p.size for p in parts) != final.size:
        raise UploadError("conflict", "the partial uploads changed")
    if not concatenates(storage):
        raise UploadError("invalid_request", "concatenation is not offered by this storage")
    if not isinstance(storage, LocalStorage):
        from .concat_s3 import concat_s3
        return await concat_s3(storage, locks, final, parts, version, progress)
    staged: StagedFile = await storage.run(_concat_local, storage, final, parts, version,
                                           progress)
    return staged


def _concat_local(storage: LocalStorage, final: Upload, parts: list[Upload], version: int,
                  progress: Progress | None) -> StagedFile:
    layout = storage.layout
    key = layout.key_for(final)
    # The name the storage's publish/discard expect of this merge version.
    staged = layout.merge_part(key, version)
    md5, merged = hashlib.md5(usedforsecurity=False), 0
    out = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        for part in parts:
            # A partial's chunks sit at their offsets in its data file.
            try:
                fd = os.open(layout.data_path(part.upload_id), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if part.size:
                    raise MissingChunkData([]) from None
                continue
            try:
                if os.fstat(fd).st_size != part.size:
                    raise MissingChunkData([])
                # Page-cache MD5 and a kernel copy, as a full merge once did.
                hash_and_copy(fd, out, part.size, md5)
            finally:
                os.close(fd)
            merged += part.size
            if progress:
                progress(merged)
        if storage.fsync:
            os.fsync(out)
    except BaseException:
        os.close(out)
        unlink_quiet(staged)
        raise
    os.close(out)
    return StagedFile(final.upload_id, version, key, md5.hexdigest(), final.size, str(staged))


def hash_and_copy(src: int, dst: int, length: int, md5: Any) -> None:
    """Feed ``length`` bytes of ``src`` (from offset 0) to ``md5`` from the page
    cache, and append them to ``dst`` at its position with a kernel-side copy.
    Both read the same open file, so they see the same bytes."""
    hash_region(src, 0, length, md5)
    os.lseek(src, 0, os.SEEK_SET)
    copy_range(src, dst, length)
