"""One chunk being received by the local backend: in place, or aside.

**In place** (the chunk's first writer, who holds its claim, ``datafile.py``):
each piece is written at its offset of the upload's data file as it streams
in; ``sync`` joins the upload's flush barrier; ``commit`` only tells the
incremental fold and lets the claim go. Nothing is copied afterwards.

**Aside** (the chunk was written or claimed before, or a tus upload whose
length is still deferred): the body streams into ``chunk_<index>.<rand>.part``. At
``commit``, under the upload's lock, its MD5 is compared with the bytes in
place: the same, and nothing is written (a re-send changes nothing);
different, and the chunk's record is cleared first, then the bytes are
copied in place (kernel-side) and synced, then the caller records them
again, so a crash in between leaves a chunk missing, never a record that
lies about its bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Protocol

from ..models import Upload
from .base import Forget
from .datafile import CLAIMED, STORED, DataFiles, UploadFiles
from .fileops import (StagedWriter, copy_at, create_exclusive, fsync_dir, pwrite_all, pwritev_all,
                      storage_error, unlink_quiet)
from .incremental import IncrementalMerges, hash_region
from .layout import FILE_MODE, Layout


class Host(Protocol):
    """What a writer needs of its backend (LocalStorage)."""

    fsync: bool
    fold: IncrementalMerges | None
    data_files: DataFiles

    async def run(self, fn: Callable[..., Any], *args: object) -> Any:
        ...


class LocalChunkWriter(StagedWriter):
    def __init__(self, storage: Host, upload: Upload, index: int,
                 files: UploadFiles, *, part: Path | None = None, fd: int | None = None) -> None:
        super().__init__(fd)
        self._storage = storage
        self._upload, self._index = upload, index
        self._files: UploadFiles | None = files
        self._part = part                       # None: in place
        self._offset = files.offset(index)
        self._written = 0
        self._claimed = part is None
        # In place, the chunk's whole length: the job writing its last bytes
        # also flushes them (see writev); -1 when not known yet (tus).
        self._whole = upload.chunk_length(index) if upload.size_known else -1
        self._synced = False

    @property
    def in_place(self) -> bool:
        return self._part is None

    # -- in a worker thread -------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.writev([data])

    def writev(self, pieces: list[bytes]) -> None:
        if self._part is not None:
            for piece in pieces:
                super().write(piece)
            return
        files = self._files
        if files is None:
            raise RuntimeError("chunk writer is closed")
        try:
            if len(pieces) == 1:
                pwrite_all(files.data_fd, pieces[0], self._offset + self._written)
            else:
                pwritev_all(files.data_fd, pieces, self._offset + self._written)
            self._written += sum(len(p) for p in pieces)
            if self._written == self._whole:
                # The chunk's last bytes: flush them in this same job rather
                # than in a second trip to the pool from sync() (a thread hop
                # and a loop wake-up less per chunk). Bytes that then fail
                # their MD5 check were flushed for nothing: in place either
                # way, they are never marked STORED.
                files.sync()
                self._synced = True
        except OSError as exc:
            raise storage_error(exc) from exc

    def _sync(self) -> None:
        try:
            if self._part is None:
                assert self._files is not None
                self._files.sync()
            elif self._fd is not None:
                if self._storage.fsync:
                    os.fdatasync(self._fd)  # a tus tail is published from this file
                os.close(self._fd)
                self._fd = None
        except OSError as exc:
            self._abort()
            raise storage_error(exc) from exc

    def _length(self) -> int:
        # What was received, not the upload's idea of this chunk: a tus
        # upload of deferred length has none yet.
        assert self._part is not None
        return os.stat(self._part).st_size

    def keep_as(self, path: Path) -> None:
        """Publish what this writer received as the file ``path`` (a tus
        tail), replacing an older one atomically, synced with its folder
        entry; then let go of the upload's files and the claim."""
        scratch: Path | None = None
        try:
            if self._part is None:
                # In place (claimed, never recorded): copied out of the data
                # file into a file of its own, which the next PATCH replays.
                assert self._files is not None
                scratch = Layout.receiving(path)
                fd = create_exclusive(scratch, FILE_MODE)
                try:
                    copy_at(self._files.data_fd, self._offset, fd, 0, self._written)
                    if self._storage.fsync:
                        os.fdatasync(fd)
                finally:
                    os.close(fd)
                os.replace(scratch, path)
            else:  # received aside: the chunk's own part file, synced
                if self._fd is not None:
                    self._sync()
                os.replace(self._part, path)
            if self._storage.fsync:
                fsync_dir(path.parent)
        except OSError as exc:
            if scratch is not None:
                unlink_quiet(scratch)
            raise storage_error(exc) from exc
        finally:
            self._abort()

    def _same_in_place(self, md5: str) -> bool:
        assert self._files is not None
        length = self._length()
        if os.fstat(self._files.data_fd).st_size < self._offset + length:
            return False  # never written this far
        held = hashlib.md5(usedforsecurity=False)
        hash_region(self._files.data_fd, self._offset, length, held)
        return held.hexdigest() == md5

    def _put_in_place(self) -> None:
        assert self._part is not None and self._files is not None
        marks = self._storage.data_files
        marks.mark(self._files, self._index, CLAIMED)  # not whole while we copy
        if self._storage.fsync:
            # On disk before any stored byte changes: a power cut mid-copy must
            # not leave the old STORED byte over mixed bytes (a merge trusts
            # STORED). Only this rewrite path pays it; claims are otherwise
            # never flushed (datafile.UploadFiles._flush).
            os.fdatasync(self._files.claims_fd)
        src = os.open(self._part, os.O_RDONLY | os.O_CLOEXEC)
        try:
            copy_at(src, 0, self._files.data_fd, self._offset, os.fstat(src).st_size)
        finally:
            os.close(src)

    def _finish_aside(self) -> None:
        assert self._files is not None
        try:
            # Even unchanged bytes are synced: they may be an aborted first
            # writer's, never flushed, about to be recorded now.
            self._files.sync()
            self._storage.data_files.mark(self._files, self._index, STORED)
        except OSError as exc:
            raise storage_error(exc) from exc
        finally:
            self._abort()

    def _store_in_place(self) -> None:
        try:
            if self._files is None:
                raise RuntimeError("chunk writer is closed")
            self._storage.data_files.mark(self._files, self._index, STORED)
        finally:
            self._abort()  # lets the claim go; the claims byte stays set

    def _abort(self) -> None:
        self._close()
        if self._part is not None:
            unlink_quiet(self._part)
        files, self._files = self._files, None
        if files is not None:
            if self._claimed:
                self._claimed = False
                self._storage.data_files.unclaim(files, self._index)
            self._storage.data_files.release(files)

    # -- on the event loop -------------------------------------------------------

    async def sync(self) -> None:
        if self._synced:
            return  # flushed by the job that wrote the last bytes
        await self._storage.run(self._sync)
        if self._part is not None and self._files is not None:
            await self._storage.data_files.wait_released(self._files, self._index)

    async def commit(self, md5: str, forget: Forget | None = None) -> None:
        run = self._storage.run
        if self._part is not None:
            if self._files is None:
                raise RuntimeError("chunk writer is closed")
            try:
                if not await run(self._same_in_place, md5):
                    if forget is not None:
                        await forget()
                    await run(self._put_in_place)
            except OSError as exc:
                await self.abort()
                raise storage_error(exc) from exc
            except BaseException:
                await self.abort()
                raise
            await run(self._finish_aside)
        else:
            await run(self._store_in_place)
        fold = self._storage.fold
        if fold is not None:
            fold.chunk_stored(self._upload, self._index, md5)

    def _revert(self) -> None:
        data_files = self._storage.data_files
        files = data_files.acquire(self._upload)
        try:
            # Written, not whole: a merge takes only STORED chunks, and the
            # next writer of this chunk rewrites it under the upload's lock.
            data_files.mark(files, self._index, CLAIMED)
        finally:
            data_files.release(files)

    async def revert(self) -> None:
        try:
            if self._storage.fold is not None:
                # The fold may have taken these bytes in: start it over.
                await self._storage.fold.drop(self._upload.upload_id)
            await self._storage.run(self._revert)
        except Exception:  # like abort: runs on a failure path already
            pass

    async def abort(self) -> None:
        try:
            await self._storage.run(self._abort)
        except Exception:  # abort must never raise: it runs from cleanup paths
            pass
