"""One PATCH body (or creation-with-upload body) cut into the upload's chunks.

Bytes go to a ChunkReceiver per chunk (hashed and written in the I/O pool, as
for chunk PUTs); each chunk that fills up is committed and recorded under the
upload's lock; what is left of an unfinished chunk when the body ends, or is
cut, becomes the upload's durable tail. With ``Upload-Checksum`` full chunks
are held (synced, not committed) until the whole body matched.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any, Awaitable, Callable, Protocol

from ..errors import UploadError
from ..models import TusState, Upload
from ..receiver import ChunkReceiver
from ..service import UploadService
from ..storage.tails import TailLost, Tails, TailWriter
from ..store.base import MetadataStore
from .protocol import Checksum

log = logging.getLogger("uploader.tus")


class Host(Protocol):
    """What an appender needs of the tus service (tus/service.py)."""

    service: UploadService
    store: MetadataStore
    tails: Tails

    async def declare_length(self, upload: Upload, length: int) -> Upload:
        ...


class TusAppender:
    def __init__(self, tus: Host, upload: Upload, offset: int, *,
                 checksum: Checksum | None, release: Callable[[], Awaitable[None]]) -> None:
        self.tus = tus
        self.upload = upload
        self.start_offset = offset
        self.index = offset // upload.chunk_size  # the chunk being written
        # Chunks below this one are committed: their old tails may go.
        self._committed = self.index
        self.received = 0  # body bytes
        self._checksum = checksum
        self._hash = checksum.hasher() if checksum else None
        self._release = release
        self._receiver: ChunkReceiver | None = None
        self._held: list[tuple[ChunkReceiver, int, str]] = []
        self._pending: asyncio.Future[Any] | None = None
        self._error: BaseException | None = None
        self._state = "open"  # -> finishing | aborting -> done

    @property
    def done(self) -> bool:
        """The body is complete (or dropped): the handler need not discard it."""
        return self._state != "open"

    @property
    def upload_id(self) -> str:
        return self.upload.upload_id

    @property
    def offset(self) -> int:
        return self.start_offset + self.received

    def _length(self, index: int) -> int:
        if not self.upload.size_known:
            return self.upload.chunk_size  # every chunk is full until the end is known
        return self.upload.chunk_length(index)

    # -- start: continue the tail ------------------------------------------

    async def start(self) -> None:
        """Open the chunk at the offset and replay its tail into it."""
        state = self.upload.tus or TusState()
        if state.tail_index != self.index or not state.tail_size:
            return
        receiver = await self._open(self.index)
        digest = hashlib.md5(usedforsecurity=False)
        try:
            async for piece in self.tus.tails.read(self.upload, self.index, state.tail_size):
                digest.update(piece)
                wait = receiver.feed(piece)
                if wait is not None:
                    await wait
        except TailLost:
            await self._lose_tail(receiver, "missing")
        if digest.hexdigest() != state.tail_md5:
            await self._lose_tail(receiver, "different")

    async def _lose_tail(self, receiver: ChunkReceiver, how: str) -> None:
        """The recorded tail cannot be read back: forget it; the client resends
        from the chunk boundary (409 with that offset)."""
        log.error("tus upload %s: tail of chunk %d is %s; the client must resend it",
                  self.upload_id, self.index, how)
        await receiver.abort()
        self._receiver = None
        state = self.upload.tus or TusState()
        state.tail_size, state.tail_md5 = 0, None
        await self.tus.store.update_tus(self.upload_id, state)
        boundary = self.index * self.upload.chunk_size
        error = UploadError("offset_mismatch", "the upload's offset changed",
                            expected_offset=boundary, provided_offset=self.start_offset)
        error.headers["Upload-Offset"] = str(boundary)
        raise error

    async def _open(self, index: int) -> ChunkReceiver:
        writer = await self.tus.tails.open_writer(self.upload, index)
        self._receiver = ChunkReceiver(
            writer, self.tus.service.executor, upload_id=self.upload_id, index=index,
            total_chunks=self.upload.total_chunks, expected_size=self._length(index),
            expected_md5=None, max_buffered=self.tus.service.config.server.max_buffered)
        self.tus.service.activity.streaming(self._receiver)  # a long PATCH is activity
        return self._receiver

    # -- body --------------------------------------------------------------

    def feed(self, data: bytes) -> "asyncio.Future[Any] | None":
        if self._state != "open" or self._error is not None:
            return None
        self.received += len(data)
        if self.upload.size_known and self.offset > self.upload.size:
            self._error = UploadError("too_large", "the body goes past the upload's length",
                                      length=self.upload.size)
            return None
        if self._hash is not None:
            self._hash.update(data)
        receiver = self._receiver
        if receiver is not None and receiver.received + len(data) < self._length(self.index):
            return receiver.feed(data)
        self._pending = asyncio.ensure_future(self._feed_across(data))
        return self._pending

    async def _feed_across(self, data: bytes) -> None:
        """Bytes that reach (or cross) a chunk boundary. Never raises into
        Tornado's body reader: the error is kept for finish()."""
        try:
            while data:
                receiver = self._receiver or await self._open(self.index)
                room = self._length(self.index) - receiver.received
                piece, data = data[:room], data[room:]
                wait = receiver.feed(piece)
                if wait is not None:
                    await wait
                if receiver.received == self._length(self.index):
                    await self._close_chunk(receiver)
        except BaseException as exc:  # noqa: BLE001 (kept, reported by finish)
            self._error = self._error or exc

    async def _close_chunk(self, receiver: ChunkReceiver) -> None:
        size, md5 = await receiver.finish()
        if self._checksum is not None:
            self._held.append((receiver, size, md5))
        else:
            await self._commit(receiver, size, md5)
        self._receiver = None
        self.index += 1

    async def _commit(self, receiver: ChunkReceiver, size: int, md5: str) -> None:
        await self.tus.service.commit_chunk(receiver, size, md5)
        self._committed = receiver.index + 1

    # -- end ---------------------------------------------------------------

    async def finish(self, *, complete: bool = False) -> int:
        """The whole body arrived: commit, keep the tail, return the offset.
        ``complete``: the draft's ``Upload-Complete: ?1`` (this is the end)."""
        self._state = "finishing"
        try:
            if self._pending is not None:
                await self._pending
            if self._error is not None:
                raise self._error
            if self._hash is not None and self._checksum is not None \
                    and self._hash.digest() != self._checksum.digest:
                raise UploadError("upload_checksum_mismatch", "Upload-Checksum does not match "
                                  "the body; its bytes were dropped",
                                  algorithm=self._checksum.algorithm)
            if complete:
                await self._declare_end()
            for receiver, size, md5 in self._held:
                await self._commit(receiver, size, md5)
            self._held = []
            await self._keep_rest()
        except BaseException:
            await self._drop()
            raise
        finally:
            await self._done()
        return self.offset

    async def _declare_end(self) -> None:
        if not self.upload.size_known:
            self.upload = await self.tus.declare_length(self.upload, self.offset)
            if self._receiver is not None:
                self._receiver.expected_size = self._length(self.index)
        elif self.offset != self.upload.size:
            raise UploadError("invalid_request", "Upload-Complete: ?1 before the upload's "
                              "length was reached", problem="length_mismatch",
                              length=self.upload.size, offset=self.offset)

    async def _keep_rest(self) -> None:
        """The bytes of the unfinished chunk: the chunk itself when it turned
        out to be the last one, else the upload's new tail."""
        receiver, self._receiver = self._receiver, None
        if receiver is None:
            return
        if self.upload.size_known and receiver.received == self._length(self.index):
            size, md5 = await receiver.finish()  # the last chunk, now whole
            await self._commit(receiver, size, md5)
            self.index += 1
            return
        if self.received == 0:  # an empty body: the recorded tail stands
            await receiver.abort()
            return
        size, md5 = await receiver.finish_partial()
        writer = receiver.writer
        assert isinstance(writer, TailWriter)
        await writer.save_tail()
        state = self.upload.tus or TusState()
        state.tail_index, state.tail_size, state.tail_md5 = self.index, size, md5
        if not await self.tus.store.update_tus(self.upload_id, state):
            raise UploadError("conflict", "the upload is no longer in progress")
        self.upload.tus = state

    async def abort(self) -> None:
        """The body was cut (client gone, idle, shutdown): keep every byte
        already durable, unless a checksum covers the body (then keep none).
        Never raises: it runs from cleanup paths."""
        if self._state != "open":
            return
        self._state = "aborting"
        try:
            if self._pending is not None:
                await self._pending
            if self._checksum is not None or self._error is not None:
                await self._drop()
            else:
                await self._keep_rest()
        except Exception:
            log.exception("tus upload %s: could not keep the bytes of a cut PATCH",
                          self.upload_id)
            await self._drop()
        finally:
            await self._done()

    async def _drop(self) -> None:
        receivers = [r for r, _, _ in self._held] + ([self._receiver] if self._receiver else [])
        self._held, self._receiver = [], None
        for receiver in receivers:
            await receiver.abort()
            await receiver.writer.abort()  # idempotent: also a held chunk's part file

    async def _done(self) -> None:
        if self._state == "done":
            return
        self._state = "done"
        try:
            await self.tus.tails.drop(self.upload_id, below=self._committed)
        except Exception:  # stale tails are ignored by the offset rule anyway
            log.warning("tus upload %s: could not remove old tails", self.upload_id)
        await self._release()
