"""A tus final upload on S3, built from its partial uploads (docs/tus.md,
"Concatenation"; docs/s3.md). Imported by ``concat.py`` only when the storage
is S3, so a server on local disk never loads the S3 client.

Parts of an unfinished multipart upload can be neither read nor copied, so:

1. **seal**: each partial's multipart upload is completed from the parts S3
   holds (every one there with its exact size, as a merge checks) into the
   partial's own object; one an earlier attempt sealed is taken as it is;
2. **plan** (:func:`plan_parts`): the final's parts are ranges of those
   objects copied inside S3 (``UploadPartCopy`` with ``CopySourceRange``),
   each at least 5 MiB except the last; where a piece would be smaller (a
   short partial) it is joined with the bytes after it into a part this
   server reads and sends (``UploadPart``);
3. **one read** of the partial objects in order (``GetObject``) hashes the
   final's MD5 and, on the way, collects the bytes of the parts it sends,
   while the copies run inside S3. Reads and copies name the ETag just seen
   (``If-Match``): the bytes hashed are the bytes copied;
4. the staged file is the final's own multipart upload holding every part:
   ``publish`` completes it after the merge's fence, ``discard`` aborts it.

A concat that fails or is cancelled aborts its multipart upload and removes
its temp files before the error goes up. Open multipart uploads at the final's
key when a concat starts are an interrupted or stale attempt's (this merge
holds the lock and the newest ``merge_version``): they are aborted first.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from botocore.exceptions import ClientError

from .errors import Unavailable, UploadError
from .models import Upload
from .storage.base import MissingChunkData, Progress, StagedFile, Storage
from .storage.fileops import create_exclusive, storage_error, unlink_quiet, write_all
from .storage.layout import FILE_MODE, Layout
from .storage.s3 import S3_LIMITS, S3Storage
from .storage.s3_util import GONE, abort_upload, error_code, translate

log = logging.getLogger("uploader.merge")
MiB = 1 << 20
# The most one UploadPartCopy copies: a request of seconds inside S3, well
# within the client's read timeout (10,000 such parts are S3's 5 TiB object).
COPY_PIECE = 512 * MiB
AT_ONCE = 4  # part requests (copies, sends) in flight per concat
READ_PIECE = MiB
# The source object is not the one sealed (gone, or replaced): the partial's
# bytes are not there. A stale merger meets this after a newer one consumed them.
SOURCE_GONE = (*GONE, "PreconditionFailed", "412")


@dataclass(frozen=True)
class Piece:
    """Bytes ``[start, end)`` of source (partial) number ``source``."""

    source: int
    start: int
    end: int


@dataclass
class Part:
    number: int  # S3's part number, from 1
    pieces: list[Piece]
    copied: bool  # one piece copied inside S3; else read here and sent

    @property
    def size(self) -> int:
        return sum(p.end - p.start for p in self.pieces)


def plan_parts(sizes: Sequence[int], *, min_part: int = S3_LIMITS.min_part_size,
               copy_piece: int = COPY_PIECE,
               max_parts: int = S3_LIMITS.max_parts) -> list[Part]:
    """The final's parts over sources of these sizes, in order: every part
    but the last at least ``min_part``; copies of at most ``copy_piece``.

    A source of ``min_part`` or more is copied (in even pieces when larger
    than ``copy_piece``). A shorter one starts a part that is read and sent:
    it takes the sources after it until it reaches ``min_part``, whole when
    what would stay of the next source is itself too short to copy, else
    just the bytes it lacks. So at most ``2 * min_part`` bytes are read per
    short source, and a sent part is below ``2 * min_part``."""
    parts: list[Part] = []
    pending: list[Piece] = []

    def add(pieces: list[Piece], copied: bool) -> None:
        parts.append(Part(len(parts) + 1, pieces, copied))

    for source, size in enumerate(sizes):
        if size <= 0:
            continue
        start = 0
        if pending:
            need = min_part - sum(p.end - p.start for p in pending)
            if size - need < min_part:  # the rest could not be copied: all of it joins
                pending.append(Piece(source, 0, size))
                if sum(p.end - p.start for p in pending) >= min_part:
                    add(pending, False)
                    pending = []
                continue
            pending.append(Piece(source, 0, need))
            add(pending, False)
            pending, start = [], need
        rest = size - start
        if rest < min_part:
            pending = [Piece(source, start, size)]
            continue
        count = -(-rest // copy_piece)
        for k in range(count):
            add([Piece(source, start + rest * k // count, start + rest * (k + 1) // count)],
                True)
    if pending:
        add(pending, False)  # the last part: any size
    if len(parts) > max_parts:
        raise UploadError("too_large", "the partial uploads need more parts than the object "
                          "storage allows in one file", max_parts=max_parts)
    return parts


@dataclass
class Source:
    """A sealed partial: its object and the ETag it was sealed with."""

    key: str
    etag: str  # quoted, as S3 gives it
    size: int


async def concat_s3(storage: Storage, final: Upload, partials: list[Upload], version: int,
                    progress: Progress | None = None) -> StagedFile:
    assert isinstance(storage, S3Storage)
    key = storage.key_for(final)
    sources = list(await asyncio.gather(*(seal(storage, p) for p in partials if p.size)))
    if final.size == 0:  # no part at all: publish writes the empty object
        return StagedFile(final.upload_id, version, key, hashlib.md5(b"").hexdigest(), 0,
                          {"empty": True})
    plan = plan_parts([s.size for s in sources])
    await abort_open(storage, key)
    created = await storage._call("create_multipart_upload", Key=key,
                                  ContentType="application/octet-stream")
    build = Build(storage, final, key, str(created["UploadId"]), sources, version, progress)
    try:
        md5, etags = await build.run(plan)
    except BaseException:
        await asyncio.shield(build.abort())
        raise
    log.info("concat of %s version %d: %d parts, %d copied inside the object storage; "
             "%d bytes read, %d of them sent", final.upload_id, version, len(plan),
             sum(p.copied for p in plan), final.size,
             sum(p.size for p in plan if not p.copied))
    return StagedFile(final.upload_id, version, key, md5, final.size,
                      {"parts": etags, "s3_upload_id": build.mpu, "concat": True})


async def seal(storage: S3Storage, partial: Upload) -> Source:
    """The partial as one object: its multipart upload completed from the
    parts S3 holds; raises MissingChunkData when they are not all there."""
    key = storage.key_for(partial)
    listed = await storage.list_parts(partial)
    if listed is not None:  # None: sealed by an earlier attempt
        by_index = {p.index: p for p in listed}
        if any(i not in by_index or by_index[i].size != partial.chunk_length(i)
               for i in range(partial.total_chunks)):
            raise MissingChunkData([])
        await storage._complete(key, storage._upload_id(partial), [
            {"PartNumber": i + 1, "ETag": f'"{by_index[i].etag}"'}
            for i in range(partial.total_chunks)])
    try:
        head = await storage._call("head_object", Key=key)
    except ClientError as exc:
        if error_code(exc) in GONE:
            raise MissingChunkData([]) from exc
        raise
    if int(head["ContentLength"]) != partial.size:
        raise MissingChunkData([])
    return Source(key, str(head["ETag"]), partial.size)


async def abort_open(storage: S3Storage, key: str) -> None:
    """Abort every multipart upload open at exactly ``key``."""
    params: dict[str, Any] = {"Prefix": key}
    while True:
        resp = await storage._call("list_multipart_uploads", **params)
        for found in resp.get("Uploads", []):
            if found["Key"] == key:
                await abort_upload(storage._call, key, found["UploadId"])
        if not resp.get("IsTruncated"):
            return
        params.update(KeyMarker=resp["NextKeyMarker"], UploadIdMarker=resp["NextUploadIdMarker"])


@dataclass
class Capture:
    """The bytes of one sent part, collected by the read into a temp file."""

    path: Path
    fd: int | None = None
    written: int = 0
    md5: Any = field(default_factory=lambda: hashlib.md5(usedforsecurity=False))


class Build:
    """One concat's parts: copies started at once, sent parts as the read
    fills them, at most AT_ONCE requests in flight."""

    def __init__(self, storage: S3Storage, final: Upload, key: str, mpu: str,
                 sources: list[Source], version: int, progress: Progress | None) -> None:
        self.storage, self.key, self.mpu = storage, key, mpu
        self.sources, self.progress = sources, progress
        # upload_part takes the multipart upload from the upload's state.
        self.target = final.replace(backend_state={"s3_upload_id": mpu})
        self.folder = storage.local.layout.chunk_dir(final.upload_id)
        self.version = version
        self.captures: dict[int, Capture] = {}
        self.tasks: list[asyncio.Task[tuple[int, str]]] = []
        self.slots = asyncio.Semaphore(AT_ONCE)

    async def run(self, plan: list[Part]) -> tuple[str, list[dict[str, Any]]]:
        try:
            self.tasks = [asyncio.create_task(self._copy(p)) for p in plan if p.copied]
            md5 = await self._read([p for p in plan if not p.copied])
            done = await asyncio.gather(*self.tasks)
        except BaseException:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            raise
        etags = [{"PartNumber": number, "ETag": f'"{etag}"'} for number, etag in sorted(done)]
        return md5, etags

    async def _request(self, operation: str, **params: Any) -> Any:
        try:
            return await self.storage._call(operation, **params)
        except ClientError as exc:
            code = error_code(exc)
            if code == "NoSuchUpload":  # aborted by a newer merge of this final
                raise UploadError("conflict", "merge superseded by a newer one") from exc
            if code in SOURCE_GONE:
                raise MissingChunkData([]) from exc
            raise

    async def _copy(self, part: Part) -> tuple[int, str]:
        [piece] = part.pieces
        source = self.sources[piece.source]
        async with self.slots:
            resp = await self._request(
                "upload_part_copy", Key=self.key, UploadId=self.mpu, PartNumber=part.number,
                CopySource={"Bucket": self.storage.cfg.bucket, "Key": source.key},
                CopySourceIfMatch=source.etag,
                CopySourceRange=f"bytes={piece.start}-{piece.end - 1}")
        etag = (resp.get("CopyPartResult") or {}).get("ETag")
        if not etag:  # S3 may answer 200 with an error in the body
            raise Unavailable("object storage did not confirm a copied part")
        return part.number, str(etag).strip('"')

    async def _send(self, part: Part, capture: Capture) -> tuple[int, str]:
        async with self.slots:
            etag = await self.storage.upload_part(self.target, part.number - 1, capture.path,
                                                  part.size, capture.md5.hexdigest())
        await self.storage.local.run(unlink_quiet, capture.path)
        return part.number, etag

    async def _read(self, sent: list[Part]) -> str:
        """MD5 of the sources in order; the sent parts' bytes on the way."""
        # Per source: (start, end, part, offset of start in the part).
        wanted: dict[int, list[tuple[int, int, Part, int]]] = {}
        for part in sent:
            offset = 0
            for p in part.pieces:
                wanted.setdefault(p.source, []).append((p.start, p.end, part, offset))
                offset += p.end - p.start
        md5, before = hashlib.md5(usedforsecurity=False), 0
        run = self.storage.local.run
        for index, source in enumerate(self.sources):
            got = 0
            resp = await self._request("get_object", Key=source.key, IfMatch=source.etag)
            async with resp["Body"] as body:
                try:
                    async for piece in body.iter_chunks(READ_PIECE):
                        filled = await run(self._take, wanted.get(index, ()), got, piece, md5)
                        got += len(piece)
                        for part in filled:
                            self.tasks.append(asyncio.create_task(
                                self._send(part, self.captures[part.number])))
                        if self.progress:
                            self.progress(before + got)
                        self._raise_failed()
                except (UploadError, MissingChunkData):
                    raise
                except Exception as exc:  # the body cut off: an outage at our edge
                    translated = translate(exc)
                    if translated is exc:
                        raise
                    raise translated from exc
            if got != source.size:
                raise Unavailable("object storage returned a partial upload cut short")
            before += got
        return md5.hexdigest()

    def _take(self, wanted: Sequence[tuple[int, int, Part, int]], at: int, piece: bytes,
              md5: Any) -> list[Part]:
        """(I/O thread) Hash ``piece`` (source bytes from ``at``) and write what
        sent parts want of it; the parts it filled."""
        md5.update(piece)
        filled = []
        end = at + len(piece)
        for start, stop, part, offset in wanted:
            lo, hi = max(start, at), min(stop, end)
            if lo >= hi:
                continue
            capture = self.captures.get(part.number)
            if capture is None:
                capture = self.captures[part.number] = Capture(Layout.receiving(
                    self.folder / f"concat_{self.version}_{part.number}"))
                capture.fd = create_exclusive(capture.path, FILE_MODE)
            data = memoryview(piece)[lo - at:hi - at]
            assert capture.fd is not None and capture.written == offset + lo - start
            try:
                write_all(capture.fd, data)
            except OSError as exc:
                raise storage_error(exc) from exc
            capture.md5.update(data)
            capture.written += hi - lo
            if capture.written == part.size:
                os.close(capture.fd)
                capture.fd = None
                filled.append(part)
        return filled

    def _raise_failed(self) -> None:
        """A part request that failed ends the read at once."""
        for task in self.tasks:
            if task.done() and not task.cancelled():
                failed = task.exception()
                if failed is not None:
                    raise failed

    async def abort(self) -> None:
        """After a failure: the multipart upload and the temp files go. Never
        raises (a multipart upload it cannot abort now is aborted by the next
        attempt, or with the final's chunks when it is removed)."""
        try:
            await abort_upload(self.storage._call, self.key, self.mpu)
        except Exception:
            log.warning("could not abort the concat's multipart upload %s of %s", self.mpu,
                        self.key, exc_info=True)

        def remove() -> None:
            for capture in self.captures.values():
                if capture.fd is not None:
                    os.close(capture.fd)
                    capture.fd = None
                unlink_quiet(capture.path)
        try:
            await self.storage.local.run(remove)
        except Exception:
            log.warning("could not remove the concat's temp files of %s", self.key,
                        exc_info=True)
