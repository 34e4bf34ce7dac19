"""Verifying a direct upload without reading it back (``s3.direct_verify:
parts``, docs/s3.md).

Every part URL is signed for the chunk's MD5 (S3 refuses other bytes) and
the service records that MD5 (``signed_parts``). At complete:

1. ``ListParts`` must show, for every index, a part whose ETag is the MD5
   recorded for it (a part PUT by anyone else, with other bytes, differs);
2. ``CompleteMultipartUpload`` names exactly those ETags (S3 refuses the
   list if a part changed since: ``InvalidPart``);
3. the object's ETag must be the multipart ETag of the recorded MD5s in
   index order: ``md5(concat(binary part md5s))-N``.

What this cannot prove, and a read-back would: that the client put the right
bytes under each index (chunks swapped by the client pass, each with its own
correct MD5), and a whole-file MD5 the client claims. Stores whose ETags are
not MD5s (SSE-KMS, SSE-C, some S3-compatibles) cannot be checked this way:
the caller reads the object back instead (``None`` from here).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Awaitable, Callable, Sequence

from ..errors import UploadError
from ..models import PARTS_VERIFIED, Upload
from .base import StagedFile, StoredPart

_MD5 = re.compile(r"\A[0-9a-f]{32}\Z")
_MULTIPART = re.compile(r"\A[0-9a-f]{32}-[0-9]+\Z")
MAX_LISTED = 1000  # part indices named in one error

# CompleteMultipartUpload with these ETags (PartNumber order) -> the object's ETag.
Complete = Callable[[list[dict[str, Any]]], Awaitable[str]]
# The assembled object's ETag, or None when there is no object.
HeadEtag = Callable[[], Awaitable["str | None"]]


def multipart_etag(md5s: Sequence[str]) -> str:
    """S3's ETag of an object assembled from parts with these MD5s, in order."""
    digest = hashlib.md5(b"".join(bytes.fromhex(m) for m in md5s), usedforsecurity=False)
    return f"{digest.hexdigest()}-{len(md5s)}"


def verifies_by_parts(upload: Upload) -> bool:
    """Made at init in parts mode (the S3 backend marks its state then)."""
    return (upload.backend_state or {}).get("verify") == PARTS_VERIFIED


def _mismatch(message: str, indices: list[int], **details: Any) -> UploadError:
    return UploadError("checksum_mismatch", message, parts=indices[:MAX_LISTED],
                       parts_count=len(indices), **details)


async def merge_by_parts(upload: Upload, version: int, key: str,
                         parts: dict[int, StoredPart] | None, complete: Complete,
                         head_etag: HeadEtag) -> StagedFile | None:
    """The completed object, verified by its parts (``parts``: every index's
    part, sizes checked; None when an earlier merge assembled it already).
    None: this store's ETags are not MD5s, read the object back instead."""
    signed = upload.signed_parts or {}
    unsigned = [i for i in range(upload.total_chunks) if i not in signed]
    expected = None if unsigned else multipart_etag(
        [signed[i] for i in range(upload.total_chunks)])
    done = StagedFile(upload.upload_id, version, key, None, upload.size, {"completed": True},
                      verified=PARTS_VERIFIED)
    if parts is None:
        etag = await head_etag()
        if etag is None:
            raise UploadError("conflict", "the upload's parts are gone; start a new upload")
        if not _MULTIPART.match(etag):
            return None
        if etag != expected:
            raise _mismatch("the object assembled earlier is not the parts signed for: "
                            "start a new upload", unsigned, retryable=False)
        return done
    if any(not _MD5.match(p.etag) for p in parts.values()):
        return None
    wrong = sorted(unsigned + [i for i in range(upload.total_chunks)
                               if i in signed and parts[i].etag != signed[i]])
    if wrong:
        # The multipart upload stays open: sending these parts again (through
        # new URLs) and completing again mends it.
        raise _mismatch(f"{len(wrong)} parts in the object store are not the bytes their "
                        "URLs were signed for (ETag differs from the recorded MD5): "
                        "send them again", wrong)
    etag = await complete([{"PartNumber": i + 1, "ETag": f'"{signed[i]}"'}
                           for i in range(upload.total_chunks)])
    if not _MULTIPART.match(etag):
        return None
    if etag != expected:
        raise _mismatch("the assembled object's ETag is not the multipart ETag of the "
                        "parts signed for: start a new upload", [], etag=etag,
                        expected_etag=expected, retryable=False)
    return done
