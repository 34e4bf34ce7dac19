"""Pieces of the S3 backend: error translation at our edge, client settings,
and the writer of one proxied chunk (staged on disk, then one UploadPart)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from ..config import S3Config
from ..errors import Unavailable, UploadError
from ..models import Upload
from .base import Forget, Progress
from .fileops import StagedWriter, storage_error, unlink_quiet

# UploadPart of one staged chunk file: (upload, index, path, size, md5) -> ETag.
PartUploader = Callable[[Upload, int, Path, int, "str | None"], Awaitable[str]]
Run = Callable[..., Awaitable[Any]]

HASH_PIECE = 4 << 20  # bytes read and hashed at a time
GONE = ("NoSuchUpload", "NoSuchKey", "404", "NotFound")


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def translate(exc: BaseException) -> BaseException:
    """S3 failures at our edge: the error table's codes, or the original."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in ("BadDigest", "InvalidDigest"):
            return UploadError("checksum_mismatch", "object storage refused the chunk's MD5")
        if code in ("QuotaExceeded", "EntityTooLarge"):
            return UploadError("insufficient_storage", "object storage refused the size")
        if code == "NoSuchBucket":  # deleted under a running server: an outage, not a bug
            return Unavailable("object storage bucket is missing")
        if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "RequestTimeout"):
            return Unavailable("object storage unavailable")
        return exc
    if isinstance(exc, (BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError, OSError)):
        return Unavailable("object storage unreachable")
    return exc


async def abort_upload(call: Run, key: str, upload_id: str) -> None:
    """AbortMultipartUpload; one already gone (completed or aborted) is fine."""
    try:
        await call("abort_multipart_upload", Key=key, UploadId=upload_id)
    except ClientError as exc:
        if error_code(exc) not in GONE:
            raise


def hash_files(files: list[tuple[Path, int]], progress: Progress | None) -> str | None:
    """MD5 of these (path, size) files in order; None unless each is there
    with its size (a staged chunk copy another instance never made)."""
    try:
        if any(os.stat(path).st_size != size for path, size in files):
            return None
    except FileNotFoundError:
        return None
    md5, merged = hashlib.md5(usedforsecurity=False), 0
    for path, _ in files:
        with open(path, "rb", buffering=0) as f:
            while piece := f.read(HASH_PIECE):
                md5.update(piece)
                merged += len(piece)
        if progress:
            progress(merged)
    return md5.hexdigest()


async def open_uploads(call: Run, prefix: str) -> list[dict[str, Any]]:
    """Every open multipart upload under ``prefix`` (all pages of
    ListMultipartUploads); ``call`` is the storage's S3 call."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"Prefix": prefix}
    while True:
        resp = await call("list_multipart_uploads", **params)
        found.extend(resp.get("Uploads", []))
        if not resp.get("IsTruncated"):
            return found
        params.update(KeyMarker=resp["NextKeyMarker"], UploadIdMarker=resp["NextUploadIdMarker"])


def b64(md5_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(md5_hex)).decode()


def client_kwargs(cfg: S3Config) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"region_name": cfg.region or None,
                              "endpoint_url": cfg.endpoint_url or None}
    if cfg.access_key_id:  # else botocore's own chain: env, files, roles
        kwargs.update(aws_access_key_id=cfg.access_key_id,
                      aws_secret_access_key=cfg.secret_access_key)
    kwargs["config"] = AioConfig(
        signature_version="s3v4",
        s3={"addressing_style": cfg.addressing_style},
        # Content-MD5 is our integrity check; botocore's default CRC32
        # trailers need aws-chunked bodies many S3-compatibles refuse.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 4, "mode": "standard"},
        max_pool_connections=64,
    )
    return kwargs


class S3ChunkWriter(StagedWriter):
    """``run`` runs blocking file work in the I/O pool; ``upload_part`` sends
    the staged file as the chunk's part."""

    def __init__(self, run: Run, upload_part: PartUploader, upload: Upload, index: int,
                 part: Path, final: Path, fd: int) -> None:
        super().__init__(fd)
        self._run, self._upload_part = run, upload_part
        self._upload, self._index = upload, index
        self._part, self._final = part, final

    async def sync(self) -> None:
        # The staged copy needs no fsync: S3 holds the durable copy once
        # UploadPart returns.
        await self._run(self._close)

    async def commit(self, md5: str, forget: Forget | None = None) -> None:
        # UploadPart replaces a part atomically: nothing to forget first.
        # UploadPart runs here, under the upload's lock, so the part in S3,
        # the staged copy and the chunk record always describe one body (at
        # the price of one part upload at a time per upload).
        await self._run(self._close)
        size = self._upload.chunk_length(self._index)
        # S3 first, then the staged copy: a failed UploadPart leaves both the
        # old part and its old staged copy in place, so they never disagree.
        await self._upload_part(self._upload, self._index, self._part, size, md5)
        try:
            await self._run(os.replace, self._part, self._final)
        except OSError as exc:
            raise storage_error(exc) from exc

    async def abort(self) -> None:
        try:
            await self._run(self._close)
            await self._run(unlink_quiet, self._part)
        except Exception:  # abort must never raise: it runs from cleanup paths
            pass
