"""Chunks as parts of an S3 multipart upload, finished files as S3 objects.

    <prefix><id>_<safe filename>                  the object (multipart upload target)
    <data_dir>/tmp/<id>/chunk_<i>.<rand>.part     a proxied chunk streaming in
    <data_dir>/tmp/<id>/chunk_<i>                 its staged copy, kept until complete

init creates the multipart upload (its UploadId lives in upload.backend_state);
chunk ``i`` is part ``i + 1``. A proxied chunk streams to a local temp file
(never into memory), goes up with ``UploadPart`` + ``Content-MD5`` (S3 checks
it too), and only then replaces the staged copy, so the staged copy always
matches the part S3 holds. The Storage split maps to S3 like this:

- merge: ``ListParts`` (the truth about what S3 holds) must show every part
  with its exact size; the whole-file MD5 is hashed from the staged copies in
  order. When some copies are not on this disk (direct mode, or another
  instance received the chunk) the parts cannot be read before completion,
  so merge completes the upload and hashes the object once, server-side;
  or, in direct mode with ``direct_verify: parts``, checks the parts' ETags
  against the MD5s their URLs were signed for instead (s3_verify.py).
- publish: ``CompleteMultipartUpload`` (nothing left when merge completed).
- discard: nothing; the multipart upload stays open for a retry (a stale
  merger never aborts or completes it), except a tus concat's own: aborted.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import Executor
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from ..config import ConfigError, S3Config
from ..errors import Unavailable, UploadError
from ..models import PARTS_VERIFIED, Upload
from ..naming import is_upload_id
from .base import MissingChunkData, PartLimits, Progress, StagedFile, StoredPart
from .fileops import create_exclusive
from .layout import FILE_MODE, Layout
from .local import LocalStorage
from .s3_checks import check_bucket, check_bucket_cors
from .s3_util import (GONE, S3ChunkWriter, abort_upload, b64, client_kwargs, error_code,
                      hash_files, open_uploads, translate)
from .s3_verify import Complete, HeadEtag, merge_by_parts, verifies_by_parts

MiB, GiB = 1 << 20, 1 << 30
S3_LIMITS = PartLimits(min_part_size=5 * MiB, max_part_size=5 * GiB, max_parts=10_000)


class S3Storage:
    def __init__(self, config: S3Config, data_dir: Path, executor: Executor, *,
                 orphan_age: float = 3600.0) -> None:
        self.cfg = config
        # Staging and its housekeeping (tmp/<id>/, .part recovery) are the
        # local backend's; only its store/ folder stays unused.
        self.local = LocalStorage(data_dir, executor, fsync=False)
        # A multipart upload younger than this may belong to an init whose
        # row is not written yet: the orphan sweep leaves it alone.
        self.orphan_age = orphan_age
        self._stack = AsyncExitStack()
        self._client: Any = None
        # scheme://host[:port] that presigned URLs point at (for the page's CSP).
        self.upload_origin: str | None = None

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        await self.local.start()
        self._client = await self._stack.enter_async_context(
            get_session().create_client("s3", **client_kwargs(self.cfg)))
        # Presigning is local computation: one dummy URL tells the origin
        # (virtual-host or path style, custom endpoint or AWS).
        sample = urlsplit(await self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.cfg.bucket, "Key": "x"}, ExpiresIn=60))
        self.upload_origin = f"{sample.scheme}://{sample.netloc}"
        try:
            await check_bucket(self._client, self.cfg)
        except ConfigError:
            await self.close()
            raise
        if self.cfg.direct:
            await check_bucket_cors(self._call, self.cfg.bucket)

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    async def ping(self) -> None:
        # Readiness: the staging folder (every proxied chunk lands there
        # first) and the bucket, which must exist and let us in.
        await self.local.ping()
        try:
            await self._call("head_bucket")
        except ClientError as exc:  # NoSuchBucket, AccessDenied: not ready either
            raise Unavailable("object storage bucket is not reachable") from exc

    async def _call(self, operation: str, **params: Any) -> Any:
        if self._client is None:
            raise Unavailable("object storage client is not started")
        try:
            return await getattr(self._client, operation)(Bucket=self.cfg.bucket, **params)
        except Exception as exc:
            translated = translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    # -- init --------------------------------------------------------------

    def key_for(self, upload: Upload) -> str:
        return f"{self.cfg.prefix}{upload.upload_id}_{upload.filename}"

    def part_limits(self) -> PartLimits:
        return S3_LIMITS

    async def create_upload(self, upload: Upload) -> dict[str, Any] | None:
        if upload.total_chunks == 0:
            return None  # S3 needs >= 1 part: an empty file is one PutObject
        resp = await self._call("create_multipart_upload", Key=self.key_for(upload),
                                ContentType="application/octet-stream")
        state = {"s3_upload_id": resp["UploadId"]}
        if self.cfg.direct and self.cfg.direct_verify == PARTS_VERIFIED:
            # Decided once per upload: its part URLs then need an MD5 to sign.
            state["verify"] = PARTS_VERIFIED
        return state

    def _upload_id(self, upload: Upload) -> str:
        state = upload.backend_state or {}
        if "s3_upload_id" not in state:
            raise UploadError("conflict", "upload was not created on the S3 storage backend")
        return str(state["s3_upload_id"])

    # -- chunks ------------------------------------------------------------

    async def open_chunk(self, upload: Upload, index: int) -> S3ChunkWriter:
        self._upload_id(upload)  # refuse before reading a byte
        final = self.local.chunk_path(upload.upload_id, index)
        part = Layout.receiving(final)
        fd = await self.local.run(create_exclusive, part, FILE_MODE)
        return S3ChunkWriter(self.local.run, self.upload_part, upload, index, part, final, fd)

    async def upload_part(self, upload: Upload, index: int, path: Path, size: int,
                          md5: str | None) -> str:
        params: dict[str, Any] = {"Key": self.key_for(upload), "PartNumber": index + 1,
                                  "UploadId": self._upload_id(upload), "ContentLength": size}
        if md5:
            params["ContentMD5"] = b64(md5)
        # A file body streams from disk (aiohttp reads it in the executor);
        # botocore seeks it back to 0 to retry.
        body = await self.local.run(open, path, "rb")
        try:
            resp = await self._call("upload_part", Body=body, **params)
        except ClientError as exc:
            if error_code(exc) in GONE:
                raise UploadError("conflict", "the upload's parts are no longer open on S3; "
                                  "start a new upload") from exc
            raise
        finally:
            await self.local.run(body.close)
        return str(resp["ETag"]).strip('"')

    async def list_parts(self, upload: Upload) -> list[StoredPart] | None:
        """Every part S3 holds, or None when the multipart upload is gone
        (completed or aborted)."""
        if upload.total_chunks == 0:
            return []
        return await self._list_parts(self.key_for(upload), self._upload_id(upload))

    def verifies_parts(self, upload: Upload) -> bool:
        # Chosen at init (its backend_state) and still configured.
        return self.cfg.direct and self.cfg.direct_verify == PARTS_VERIFIED \
            and verifies_by_parts(upload)

    async def parts_open(self, upload: Upload) -> bool:
        if upload.total_chunks == 0:
            return False
        try:
            await self._call("list_parts", Key=self.key_for(upload),
                             UploadId=self._upload_id(upload), MaxParts=1)
        except ClientError as exc:
            if error_code(exc) in GONE:
                return False
            raise
        return True

    async def _list_parts(self, key: str, s3_upload_id: str) -> list[StoredPart] | None:
        parts: list[StoredPart] = []
        marker = 0
        while True:  # ListParts pages hold at most 1,000 parts
            try:
                resp = await self._call("list_parts", Key=key, UploadId=s3_upload_id,
                                        PartNumberMarker=marker)
            except ClientError as exc:
                if error_code(exc) in GONE:
                    return None
                raise
            for p in resp.get("Parts", []):
                parts.append(StoredPart(int(p["PartNumber"]) - 1, int(p["Size"]),
                                        str(p["ETag"]).strip('"')))
            if not resp.get("IsTruncated"):
                return parts
            marker = int(resp["NextPartNumberMarker"])

    # -- merge / publish -----------------------------------------------------

    async def merge(self, upload: Upload, version: int,
                    progress: Progress | None = None) -> StagedFile:
        key = self.key_for(upload)
        if upload.total_chunks == 0:
            return StagedFile(upload.upload_id, version, key, hashlib.md5(b"").hexdigest(), 0,
                              {"empty": True})
        parts = await self.list_parts(upload)
        by_index = None if parts is None else {p.index: p for p in parts}
        if by_index is not None and (missing := [
                i for i in range(upload.total_chunks)
                if i not in by_index or by_index[i].size != upload.chunk_length(i)]):
            raise MissingChunkData(missing)
        if self.verifies_parts(upload) and (staged := await merge_by_parts(
                upload, version, key, by_index, self._completer(upload), self._head_etag(key))):
            return staged
        if by_index is None:
            # An earlier merge completed it (a superseded merger, or a
            # checksum mismatch): hash what it built.
            size = await self.file_size(key)
            if size != upload.size:
                raise UploadError("conflict", "the upload's parts are gone; start a new upload")
            md5 = await self._hash_object(key, upload.size, progress)
            return StagedFile(upload.upload_id, version, key, md5, upload.size, {"completed": True})
        etags = [{"PartNumber": i + 1, "ETag": f'"{by_index[i].etag}"'}
                 for i in range(upload.total_chunks)]
        staged_md5: str | None = None if self.cfg.direct else await self.local.run(
            self._hash_staged, upload, progress)
        if staged_md5 is None:
            # Some bytes never crossed this server: complete, then read once.
            await self._complete(key, self._upload_id(upload), etags)
            md5 = await self._hash_object(key, upload.size, progress)
            return StagedFile(upload.upload_id, version, key, md5, upload.size, {"completed": True})
        return StagedFile(upload.upload_id, version, key, staged_md5, upload.size,
                          {"parts": etags, "s3_upload_id": self._upload_id(upload)})

    def _hash_staged(self, upload: Upload, progress: Progress | None) -> str | None:
        """MD5 of the staged copies in order; None unless all are here."""
        return hash_files([(self.local.chunk_path(upload.upload_id, i), upload.chunk_length(i))
                           for i in range(upload.total_chunks)], progress)

    async def _hash_object(self, key: str, size: int, progress: Progress | None) -> str:
        md5, merged = hashlib.md5(usedforsecurity=False), 0
        async for piece in self.read_file(key, 0, size):
            await self.local.run(md5.update, piece)  # hashing off the loop
            merged += len(piece)
            if progress:
                progress(merged)
        return md5.hexdigest()

    async def _complete(self, key: str, s3_upload_id: str, parts: list[dict[str, Any]]) -> str:
        """The completed object's ETag."""
        try:
            resp = await self._call("complete_multipart_upload", Key=key, UploadId=s3_upload_id,
                                    MultipartUpload={"Parts": parts})
        except ClientError as exc:
            # Completed by an earlier call whose answer was lost: done.
            if error_code(exc) in GONE and (etag := await self._head_etag(key)()) is not None:
                return etag
            if error_code(exc) == "InvalidPart":  # a part changed since ListParts
                raise UploadError("checksum_mismatch", "a part changed in the object store "
                                  "while completing: send it again") from exc
            raise
        # S3 may answer 200 with an <Error> body; botocore turns that into a
        # retried 500, and this catches any reply that still lacks a result.
        if not resp.get("ETag"):
            raise Unavailable("object storage did not confirm the completed upload")
        return str(resp["ETag"]).strip('"')

    def _completer(self, upload: Upload) -> Complete:
        key, s3_upload_id = self.key_for(upload), self._upload_id(upload)
        return lambda parts: self._complete(key, s3_upload_id, parts)

    def _head_etag(self, key: str) -> HeadEtag:
        async def head() -> str | None:
            found = await self._head(key)
            return None if found is None else str(found["ETag"]).strip('"')
        return head

    async def publish(self, staged: StagedFile) -> None:
        handle = staged.handle if isinstance(staged.handle, dict) else {}
        if handle.get("completed"):
            return
        if handle.get("empty") or staged.size == 0:
            await self._call("put_object", Key=staged.key, Body=b"")
            return
        if handle.get("s3_upload_id"):
            await self._complete(staged.key, handle["s3_upload_id"], handle["parts"])
            return
        # Without the merge's handle (a republish after a crash), find the
        # multipart upload by its key and take the parts from S3 again.
        for open_upload in await open_uploads(self._call, staged.key):
            if open_upload["Key"] != staged.key:
                continue
            listed = await self._list_parts(staged.key, open_upload["UploadId"]) or []
            if sum(p.size for p in listed) != staged.size:
                continue  # a stale tus concat's unfinished one (concat_s3.py)
            parts = [{"PartNumber": p.index + 1, "ETag": f'"{p.etag}"'}
                     for p in sorted(listed, key=lambda p: p.index)]
            await self._complete(staged.key, open_upload["UploadId"], parts)
            return
        if await self.file_size(staged.key) is None:
            raise UploadError("internal", "nothing to publish: the multipart upload is gone")

    async def discard(self, staged: StagedFile) -> None:
        handle = staged.handle if isinstance(staged.handle, dict) else {}
        if handle.get("concat"):  # concat_s3.py's own: the next merge builds anew
            await abort_upload(self._call, staged.key, handle["s3_upload_id"])

    async def staged_exists(self, staged: StagedFile) -> bool:
        return any(u["Key"] == staged.key for u in await open_uploads(self._call, staged.key))

    # -- removal, reads, housekeeping -----------------------------------------

    async def delete_chunks(self, upload_id: str) -> None:
        await self.local.delete_chunks(upload_id)
        if not is_upload_id(upload_id):
            return
        # A tus upload's tail (storage/tails.py); deleting a missing key is fine.
        await self._call("delete_object", Key=f"{self.cfg.prefix}{upload_id}.tail")
        for open_upload in await open_uploads(self._call, f"{self.cfg.prefix}{upload_id}_"):
            await abort_upload(self._call, open_upload["Key"], open_upload["UploadId"])

    async def delete_upload(self, upload: Upload) -> None:
        await self.delete_chunks(upload.upload_id)
        # In direct mode a merge completes the object before it can hash it:
        # a refused MD5 leaves that object with no storage_key recorded.
        await self._call("delete_object", Key=upload.storage_key or self.key_for(upload))

    async def file_size(self, key: str) -> int | None:
        found = await self._head(key)
        return None if found is None else int(found["ContentLength"])

    async def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(await self._call("head_object", Key=key))
        except ClientError as exc:
            if error_code(exc) in GONE:
                return None
            raise

    async def read_file(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        if end <= start:
            return
        resp = await self._call("get_object", Key=key, Range=f"bytes={start}-{end - 1}")
        async with resp["Body"] as body:
            try:
                async for piece in body.iter_chunks(1 << 20):
                    yield piece
            except Exception as exc:
                raise translate(exc) from exc

    async def download_url(self, key: str, content_disposition: str) -> str | None:
        if self.cfg.download != "redirect":
            return None
        return await self._client.generate_presigned_url(
            "get_object", ExpiresIn=self.cfg.presign_expiry,
            Params={"Bucket": self.cfg.bucket, "Key": key,
                    "ResponseContentDisposition": content_disposition})

    @property
    def direct(self) -> bool:
        return self.cfg.direct

    async def presign_part(self, upload: Upload, index: int, md5: str | None) -> dict[str, Any]:
        params = {"Bucket": self.cfg.bucket, "Key": self.key_for(upload),
                  "UploadId": self._upload_id(upload), "PartNumber": index + 1}
        headers: dict[str, str] = {}
        if md5:  # signed: S3 refuses the PUT unless this exact header comes
            params["ContentMD5"] = headers["Content-MD5"] = b64(md5)
        url = await self._client.generate_presigned_url(
            "upload_part", Params=params, ExpiresIn=self.cfg.presign_expiry)
        return {"url": url, "method": "PUT", "headers": headers,
                "expires_in": self.cfg.presign_expiry}

    async def temp_upload_ids(self) -> list[str]:
        ids = set(await self.local.temp_upload_ids())
        cutoff = time.time() - self.orphan_age
        start = len(self.cfg.prefix)
        for open_upload in await open_uploads(self._call, self.cfg.prefix):
            key, initiated = open_upload["Key"], open_upload.get("Initiated")
            candidate = key[start:start + 32]
            if (key[start + 32:start + 33] == "_" and is_upload_id(candidate)
                    and initiated is not None and initiated.timestamp() <= cutoff):
                ids.add(candidate)
        return sorted(ids)

    async def recover(self, older_than: float = 0.0) -> int:
        return await self.local.recover(older_than)
