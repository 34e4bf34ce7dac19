"""The durable tail of a tus upload: the bytes of one chunk short of its end
(docs/tus.md, "A PATCH stream cut into our chunks").

A tail is written through a chunk writer of the backend (local: in place, or
to the chunk's own ``.part`` file; hashed, synced) that can end either way: as
the chunk (``commit``, when the chunk filled up) or as the tail (``save_tail``;
local: ``LocalChunkWriter.keep_as``).
Tails only grow within a chunk and are written before they are recorded, so
the first ``tail.size`` bytes of a stored tail are always the recorded ones.

    local: <data_dir>/tmp/<id>/tail_<index>   (layout.py; the chunk is written in
                                               place when its claim is free, else
                                               aside; a tail is copied or renamed
                                               to this name, dir fsynced)
    S3:    <prefix><id>.tail                   (PutObject; instances need not
                                                share a disk)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from ..errors import UploadError
from ..models import Upload
from .base import ChunkWriter, Forget
from .fileops import (READ_PIECE, listdir, unlink_quiet)
from .local import LocalStorage
from .local_writer import LocalChunkWriter


class TailLost(Exception):
    """The recorded tail is not (all) there any more."""


class TailWriter:
    """The backend's own chunk writer, which can also end as the tail."""

    def __init__(self, inner: ChunkWriter, save: Callable[[Any], Awaitable[None]]) -> None:
        self.inner = inner
        self._save = save

    def write(self, data: bytes) -> None:
        self.inner.write(data)

    def writev(self, pieces: list[bytes]) -> None:
        self.inner.writev(pieces)

    async def sync(self) -> None:
        await self.inner.sync()

    async def commit(self, md5: str, forget: Forget | None = None) -> None:
        await self.inner.commit(md5, forget)

    async def abort(self) -> None:
        await self.inner.abort()

    async def revert(self) -> None:
        await self.inner.revert()

    async def save_tail(self) -> None:
        """Publish the bytes written as the upload's tail for this chunk,
        durably, replacing an older tail atomically."""
        await self._save(self.inner)


class Tails(Protocol):
    async def open_writer(self, upload: Upload, index: int) -> TailWriter:
        ...

    def read(self, upload: Upload, index: int, size: int) -> AsyncIterator[bytes]:
        """The first ``size`` bytes of the tail of chunk ``index``; raises
        :class:`TailLost` when fewer are stored."""

    async def drop(self, upload_id: str, below: int) -> None:
        """Remove tails of chunks below ``below`` (absorbed into chunks)."""


def tails_for(storage: object) -> Tails | None:
    """The tail store of a backend (None: tus cannot be served on it)."""
    if isinstance(storage, LocalStorage):
        return LocalTails(storage)
    if type(storage).__name__ == "S3Storage":  # no import: the S3 extra may be absent
        return S3Tails(storage)
    return None


# -- local disk (one disk, or a volume shared by every instance) --------------


class LocalTails:
    def __init__(self, storage: LocalStorage) -> None:
        self.storage = storage

    def path(self, upload_id: str, index: int) -> Path:
        return self.storage.layout.tail_path(upload_id, index)

    async def open_writer(self, upload: Upload, index: int) -> TailWriter:
        tail = self.path(upload.upload_id, index)

        async def save_tail(writer: LocalChunkWriter) -> None:
            await self.storage.run(writer.keep_as, tail)
        # In place when the chunk's claim is free: a PATCH that fills the
        # chunk then costs what a chunk PUT costs (nothing copied). Not while
        # the length is deferred: bytes dropped there (a checksum mismatch)
        # could lie past the length declared later, in the file a merge links.
        aside = not upload.size_known
        return TailWriter(await self.storage.open_chunk(upload, index, aside=aside), save_tail)

    async def read(self, upload: Upload, index: int, size: int) -> AsyncIterator[bytes]:
        path = self.path(upload.upload_id, index)
        try:
            fd = await self.storage.run(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TailLost(str(path)) from None
        try:
            offset = 0
            while offset < size:
                piece = await self.storage.run(os.pread, fd, min(READ_PIECE, size - offset),
                                               offset)
                if not piece:
                    raise TailLost(f"{path} holds {offset} of {size} bytes")
                offset += len(piece)
                yield piece
        finally:
            os.close(fd)

    async def drop(self, upload_id: str, below: int) -> None:
        layout = self.storage.layout
        folder = layout.chunk_dir(upload_id)

        def sweep() -> None:
            for name in listdir(folder):
                index = layout.tail_index(name)
                if index is not None and index < below:
                    unlink_quiet(folder / name)
        await self.storage.run(sweep)


# -- S3 ------------------------------------------------------------------------


def tail_key(storage: Any, upload_id: str) -> str:
    return f"{storage.cfg.prefix}{upload_id}.tail"


class S3Tails:
    """The tail goes to the bucket, so whichever instance takes the next
    PATCH can read it; the staged part file is only this request's."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    async def open_writer(self, upload: Upload, index: int) -> TailWriter:
        storage = self.storage
        key = tail_key(storage, upload.upload_id)

        async def save_tail(writer: Any) -> None:
            # The part file goes up as one object (durable once S3 has it), then away.
            run = storage.local.run
            await run(writer._close)
            body = await run(open, writer._part, "rb")
            try:
                await storage._call("put_object", Key=key, Body=body)
            finally:
                await run(body.close)
                await run(unlink_quiet, writer._part)
        return TailWriter(await storage.open_chunk(upload, index), save_tail)

    async def read(self, upload: Upload, index: int, size: int) -> AsyncIterator[bytes]:
        if size <= 0:
            return
        got = 0
        try:
            async for piece in self.storage.read_file(tail_key(self.storage, upload.upload_id),
                                                      0, size):
                got += len(piece)
                yield piece
        except UploadError:
            raise
        except Exception as exc:  # NoSuchKey and friends: the tail is gone
            raise TailLost(str(exc)) from exc
        if got < size:
            raise TailLost(f"tail object holds {got} of {size} bytes")

    async def drop(self, upload_id: str, below: int) -> None:
        pass  # one object per upload, replaced by the next tail, removed with the chunks
