"""A tus final upload on S3, built from its partial uploads (docs/tus.md,
"Concatenation"; docs/s3.md). Imported by ``concat.py`` only when the storage
is S3, so a server on local disk never loads the S3 client.

Parts of an unfinished multipart upload can be neither read nor copied, so:

1. **seal**: each partial's multipart upload is completed from the parts S3
   holds (every one there with its exact size, as a merge checks) into the
   partial's own object; one an earlier attempt sealed is taken as it is;
2. **plan** (``concat_plan.py``): the final's parts are ranges of those
   objects copied inside S3 (``UploadPartCopy`` with ``CopySourceRange``),
   each at least 5 MiB except the last; where a piece would be smaller (a
   short partial) it is joined with the bytes after it into a part this
   server reads and sends (``UploadPart``);
3. **one read** of the partials in order hashes the final's MD5 and, on the
   way, collects the bytes of the parts it sends, while the copies run inside
   S3. It reads a partial's staged chunk copies when they are all on this
   disk (proxy mode): sealed under the partial's lock, which a chunk commit
   holds across its UploadPart and its copy's rename, and with no part open
   after it, they are the sealed bytes. Otherwise (direct mode, chunks
   received by another instance) it reads the object back from S3; reads and
   copies name the ETag seen at the seal (``If-Match``), so the bytes hashed
   are the bytes copied;
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
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncGenerator, Sequence

from botocore.exceptions import ClientError

from .concat_plan import Part, plan_parts
from .errors import Unavailable, UploadError
from .locks.base import LockTimeout
from .locks.names import UploadLocks
from .models import Upload
from .storage.base import MissingChunkData, Progress, StagedFile, Storage
from .storage.fileops import create_exclusive, storage_error, unlink_quiet, write_all
from .storage.layout import FILE_MODE, Layout
from .storage.s3 import S3_LIMITS, S3Storage
from .storage.s3_util import GONE, abort_upload, error_code, open_uploads, translate

log = logging.getLogger("uploader.merge")
MiB = 1 << 20
AT_ONCE = 4  # part requests (copies, sends) in flight per concat
READ_PIECE = MiB  # from S3 (aiohttp's pieces)
FILE_PIECE = 4 * MiB  # from a staged chunk copy
# The source object is not the one sealed (gone, or replaced): the partial's
# bytes are not there. A stale merger meets this after a newer one consumed them.
SOURCE_GONE = (*GONE, "PreconditionFailed", "412")


@dataclass
class Source:
    """A sealed partial: its object and the ETag it was sealed with."""

    key: str
    etag: str  # quoted, as S3 gives it
    size: int
    # Its staged chunk copies, in order, when all are on this disk (proxy mode).
    staged: list[Path] | None = None


async def concat_s3(storage: Storage, locks: UploadLocks, final: Upload,
                    partials: list[Upload], version: int,
                    progress: Progress | None = None) -> StagedFile:
    assert isinstance(storage, S3Storage)
    key = storage.key_for(final)
    started = time.monotonic()
    sources = list(await asyncio.gather(*(seal(storage, locks, p)
                                           for p in partials if p.size)))
    if final.size == 0:  # no part at all: publish writes the empty object
        return StagedFile(final.upload_id, version, key, hashlib.md5(b"").hexdigest(), 0,
                          {"empty": True})
    plan = plan_parts([s.size for s in sources], min_part=S3_LIMITS.min_part_size,
                      max_parts=S3_LIMITS.max_parts)
    sealed = time.monotonic()
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
             "%d bytes read (%d of them back from it), %d sent; %.2f s sealing the partials, "
             "%.2f s building (the read alone %.2f s)", final.upload_id, version, len(plan),
             sum(p.copied for p in plan), final.size,
             sum(s.size for s in sources if s.staged is None),
             sum(p.size for p in plan if not p.copied), sealed - started,
             time.monotonic() - sealed, build.read_seconds)
    return StagedFile(final.upload_id, version, key, md5, final.size,
                      {"parts": etags, "s3_upload_id": build.mpu, "concat": True})


async def seal(storage: S3Storage, locks: UploadLocks, partial: Upload) -> Source:
    """The partial as one object: its multipart upload completed from the
    parts S3 holds, under the partial's lock (no chunk commit between a part
    and its staged copy); raises MissingChunkData when they are not all there."""
    try:
        async with locks.upload(partial.upload_id, wait=locks.ttl):
            source = await _seal(storage, partial)
    except LockTimeout:
        raise UploadError("conflict", "a partial upload is busy; try again",
                          upload_id=partial.upload_id) from None
    # After the seal no part of it can change: its staged copies stay its bytes.
    source.staged = None if storage.cfg.direct else await storage.local.run(
        staged_copies, storage, partial)
    return source


def staged_copies(storage: S3Storage, partial: Upload) -> list[Path] | None:
    """(I/O thread) The partial's staged chunk copies, None unless every one
    is on this disk with its size."""
    paths = [storage.local.chunk_path(partial.upload_id, i) for i in range(partial.total_chunks)]
    try:
        if all(os.stat(p).st_size == partial.chunk_length(i) for i, p in enumerate(paths)):
            return paths
    except FileNotFoundError:
        pass
    return None


async def _seal(storage: S3Storage, partial: Upload) -> Source:
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
    for found in await open_uploads(storage._call, key):
        if found["Key"] == key:
            await abort_upload(storage._call, key, found["UploadId"])


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
        self.read_seconds = 0.0

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
        began = time.monotonic()
        for index, source in enumerate(self.sources):
            got = 0
            async with aclosing(self._pieces(source)) as pieces:  # closed on any error
                async for piece in pieces:
                    filled = await run(self._take, wanted.get(index, ()), got, piece, md5)
                    got += len(piece)
                    for part in filled:
                        self.tasks.append(asyncio.create_task(
                            self._send(part, self.captures[part.number])))
                    if self.progress:
                        self.progress(before + got)
                    self._raise_failed()
            if got != source.size:
                raise Unavailable("object storage returned a partial upload cut short")
            before += got
        self.read_seconds = time.monotonic() - began
        return md5.hexdigest()

    async def _pieces(self, source: Source) -> AsyncGenerator[bytes, None]:
        """The partial's bytes in order: its staged copies, or its object."""
        run = self.storage.local.run
        if source.staged is not None:
            for path in source.staged:
                f = await run(open, path, "rb", 0)
                try:
                    while piece := await run(f.read, FILE_PIECE):
                        yield piece
                finally:
                    await run(f.close)
            return
        resp = await self._request("get_object", Key=source.key, IfMatch=source.etag)
        async with resp["Body"] as body:
            try:
                async for piece in body.iter_chunks(READ_PIECE):
                    yield piece
            except Exception as exc:  # the body cut off: an outage at our edge
                translated = translate(exc)
                if translated is exc:
                    raise
                raise translated from exc

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
