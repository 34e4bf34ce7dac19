"""Chunk bytes and merged files on the local disk (paths: ``layout.py``).

Every chunk of an upload is written at its offset of one data file
(``datafile.py``; the writers: ``local_writer.py``), made durable by a flush
shared with the upload's other chunks in flight, and its commit feeds the
incremental hash. A merge hashes what the fold has not, hard-links the data
file as the version-named staged file (nothing copied), and ``publish``
renames that to its final name. Every blocking call runs in the shared I/O
thread pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from ..errors import Unavailable
from ..models import Upload
from ..naming import is_upload_id
from .base import MissingChunkData, PartialMerge, Progress, StagedFile
from .datafile import STORED, DataFiles
from .fileops import (READ_PIECE, create_exclusive, fsync_dir, listdir, storage_error,
                      unlink_quiet)
from .incremental import FoldState, IncrementalMerges, hash_region, usable
from .layout import FILE_MODE, Layout
from .local_writer import LocalChunkWriter


class LocalStorage:
    def __init__(self, data_dir: Path, executor: Executor, *, fsync: bool = True,
                 incremental: bool = True, fold_nice: int = 0) -> None:
        self.layout = Layout(data_dir)
        self.root = self.layout.root
        self.executor = executor
        self.fsync = fsync
        self.data_files = DataFiles(self.layout, fsync=fsync)
        self._fold_pool: ThreadPoolExecutor | None = None
        self.fold: IncrementalMerges | None = None
        if incremental:
            self._fold_pool = ThreadPoolExecutor(1, thread_name_prefix="uploader-fold",
                                                 initializer=_renice, initargs=(fold_nice,))
            self.fold = IncrementalMerges(self.layout, self._fold_pool, self.run,
                                          fsync=fsync)
        # Merges that reused an incremental state / that read every chunk,
        # and the bytes reused (for metrics, and tests of the fallback).
        self.merge_stats = {"incremental": 0, "full": 0, "reused_bytes": 0}
        # How chunk writers were opened: aside costs a copy at commit.
        self.write_stats = {"in_place": 0, "aside": 0}

    async def run(self, fn: Callable[..., Any], *args: object) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def chunk_path(self, upload_id: str, index: int) -> Path:
        return self.layout.chunk_path(upload_id, index)

    async def start(self) -> None:
        await self.run(self.layout.make_dirs)

    async def close(self) -> None:
        if self.fold is not None:
            await self.fold.close()
        if self._fold_pool is not None:
            self._fold_pool.shutdown(wait=True)

    def merged_ahead(self, upload_id: str) -> int:
        """The IncrementalMerge capability (storage/base.py)."""
        return self.fold.merged_ahead(upload_id) if self.fold else 0

    async def ping(self) -> None:
        layout = self.layout

        def probe() -> None:
            # A real create + unlink in tmp/ (where chunks land), not
            # os.access: that says yes to root on a read-only mount, and
            # a vanished data_dir is never recreated here (only start() does).
            if not layout.store.is_dir():
                raise FileNotFoundError(layout.store)
            probe_path = layout.tmp / f".ping.{secrets.token_hex(6)}"
            os.close(os.open(probe_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             FILE_MODE))
            os.unlink(probe_path)
        try:
            await self.run(probe)
        except OSError as exc:
            raise Unavailable("storage is not writable") from exc

    async def open_chunk(self, upload: Upload, index: int, *,
                         aside: bool = False) -> LocalChunkWriter:
        """In place for the chunk's first writer; ``aside`` (a tus upload of
        deferred length) or a chunk written before: a scratch file."""
        return await self.run(self._open_chunk, upload, index, aside)

    def _open_chunk(self, upload: Upload, index: int, aside: bool) -> LocalChunkWriter:
        files = self.data_files.acquire(upload)
        try:
            if not aside and self.data_files.claim(files, index):
                self.write_stats["in_place"] += 1
                return LocalChunkWriter(self, upload, index, files)
            self.write_stats["aside"] += 1
            part = self.layout.receiving(self.layout.chunk_path(upload.upload_id, index))
            fd = create_exclusive(part, FILE_MODE)
        except BaseException:
            self.data_files.release(files)
            raise
        return LocalChunkWriter(self, upload, index, files, part=part, fd=fd)

    def _merge_sync(self, upload: Upload, version: int, progress: Progress | None,
                    state: FoldState | None) -> StagedFile:
        key = self.layout.key_for(upload)
        part = self.layout.merge_part(key, version)
        start, md5 = 0, hashlib.md5(usedforsecurity=False)
        if state is not None and usable(state, upload, upload.chunks):
            start, md5 = state.merged, state.md5
        try:
            fd = self._merge_source(upload)
            try:
                self.merge_stats["incremental" if start else "full"] += 1
                self.merge_stats["reused_bytes"] += start
                if progress:
                    progress(start)
                for offset in range(start, upload.size, READ_PIECE):
                    length = min(READ_PIECE, upload.size - offset)
                    hash_region(fd, offset, length, md5)
                    if progress:
                        progress(offset + length)
                if self.fsync:
                    os.fsync(fd)  # the chunks' flushes made it cheap
                unlink_quiet(part)
                # The staged file is the data file itself under its merge
                # version's name: nothing copied, fencing as before.
                try:
                    os.link(self.layout.data_path(upload.upload_id), part)
                except FileNotFoundError:
                    # Gone while we hashed: a newer merger published it (we
                    # were paused), or a delete. Nothing of ours to stage.
                    raise MissingChunkData(_recorded(upload)) from None
                if self.fsync:
                    fsync_dir(part.parent)
            finally:
                os.close(fd)
        except OSError as exc:
            unlink_quiet(part)
            raise storage_error(exc) from exc
        except BaseException:
            unlink_quiet(part)
            raise
        return StagedFile(upload.upload_id, version, key, md5.hexdigest(), upload.size, str(part))

    def _merge_source(self, upload: Upload) -> int:
        """The data file, opened, once every chunk is provably in it; raises
        MissingChunkData for the recorded chunks that are not."""
        layout = self.layout
        if upload.total_chunks and not layout.data_path(upload.upload_id).exists() and not any(
                Layout.chunk_index(n) is not None for n in listdir(
                    layout.chunk_dir(upload.upload_id))):
            # Never written here (or merged and removed by a newer merger):
            # make nothing.
            raise MissingChunkData(_recorded(upload))
        files = self.data_files.acquire(upload)  # opens it (and migrates old chunks)
        try:
            claims = os.pread(files.claims_fd, upload.total_chunks, 0)
            whole = os.fstat(files.data_fd).st_size == upload.size
            # The merge's own descriptor of the file just checked (the
            # cache's is closed by forget below).
            fd = os.dup(files.data_fd)
        finally:
            self.data_files.release(files)
            self.data_files.forget(upload.upload_id)
        recorded = _recorded(upload)
        missing = [i for i in recorded if not whole or claims[i:i + 1] != STORED]
        if missing:
            os.close(fd)
            raise MissingChunkData(missing)
        return fd

    async def merge(self, upload: Upload, version: int,
                    progress: Progress | None = None) -> StagedFile:
        """Reuses this process's incremental merge when it provably matches
        the recorded chunks (``upload.chunks``)."""
        state = await self.fold.take(upload.upload_id, progress) if self.fold else None
        return await self.run(self._merge_sync, upload, version, progress, state)

    def _staged_path(self, staged: StagedFile) -> Path:
        return self.layout.merge_part(staged.key, staged.version)

    async def publish(self, staged: StagedFile) -> None:
        def move() -> None:
            final = self.layout.final_path(staged.key)
            os.replace(self._staged_path(staged), final)
            if self.fsync:
                fsync_dir(final.parent)
        await self.run(move)

    async def discard(self, staged: StagedFile) -> None:
        await self.run(unlink_quiet, self._staged_path(staged))

    async def staged_exists(self, staged: StagedFile) -> bool:
        return bool(await self.run(self._staged_path(staged).exists))

    async def partial_merges(self) -> list[PartialMerge]:
        """The StagedMerges capability: the version-named staged files of
        merges (a merge recorded ``completed`` whose process died before the
        rename leaves the file the row promises) and incremental folds an
        earlier release left behind."""
        store = self.layout.store

        def scan() -> list[PartialMerge]:
            found = []
            for name in listdir(store):
                merge = Layout.parse_merge_part(name)
                upload_id = merge[0] if merge else Layout.parse_fold_part(name)
                if upload_id is None:
                    continue
                try:
                    size = (store / name).stat().st_size
                except FileNotFoundError:
                    continue  # published or discarded meanwhile
                found.append(PartialMerge(upload_id, merge[1] if merge else None, name, size))
            return found
        return list(await self.run(scan))

    async def remove_partial(self, partial: PartialMerge) -> None:
        path = self.layout.inside(self.layout.store / partial.name)
        await self.run(unlink_quiet, path)

    async def delete_chunks(self, upload_id: str) -> None:
        if self.fold is not None:
            await self.fold.drop(upload_id)
        await self.run(self.data_files.forget, upload_id)

        def missing_is_fine(func: object, name: str, exc_info: tuple[Any, ...]) -> None:
            # Absent is fine (another instance got there first); any other
            # failure must surface, or the sweep would drop the row and report
            # bytes removed that are still on disk.
            if not isinstance(exc_info[1], FileNotFoundError):
                raise exc_info[1]
        # The path check (resolve: an lstat per component) runs in the pool
        # too: the expiry sweep removes thousands of uploads in a row, and on
        # the event loop those syscalls would stall every request meanwhile.
        await self.run(lambda: shutil.rmtree(self.layout.chunk_dir(upload_id),
                                             onerror=missing_is_fine))

    async def delete_upload(self, upload: Upload) -> None:
        await self.delete_chunks(upload.upload_id)
        key = upload.storage_key or self.layout.key_for(upload)
        await self.run(lambda: unlink_quiet(self.layout.final_path(key)))

    async def file_size(self, key: str) -> int | None:
        path = self.layout.final_path(key)

        def size() -> int | None:
            try:
                return os.stat(path).st_size
            except FileNotFoundError:
                return None
        result: int | None = await self.run(size)
        return result

    async def read_file(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        path = self.layout.final_path(key)
        fd = await self.run(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            offset = start
            while offset < end:
                piece = await self.run(os.pread, fd, min(READ_PIECE, end - offset), offset)
                if not piece:
                    break
                offset += len(piece)
                yield piece
        finally:
            os.close(fd)

    async def free_bytes(self) -> int:
        """The SpaceReporting capability: bytes an unprivileged writer may
        still use under data_dir."""
        st = await self.run(os.statvfs, self.root)
        return int(st.f_bavail * st.f_frsize)

    async def temp_upload_ids(self) -> list[str]:
        def ids() -> list[str]:
            return [n for n in listdir(self.layout.tmp) if is_upload_id(n)]
        return list(await self.run(ids))

    async def recover(self, older_than: float = 0.0) -> int:
        """Remove ``.part`` files not touched for ``older_than`` seconds: the
        leftovers of writers and mergers that crashed. With several instances
        on one data_dir keep the age above the longest chunk or merge."""
        cutoff = time.time() - older_than
        layout = self.layout

        def sweep() -> int:
            removed = 0
            dirs = [layout.store] + [layout.tmp / n for n in listdir(layout.tmp)]
            for d in dirs:
                for name in listdir(d):
                    p = d / name
                    try:
                        if name.endswith(".part") and p.stat().st_mtime <= cutoff:
                            p.unlink()
                            removed += 1
                    except FileNotFoundError:
                        pass
            return removed
        return int(await self.run(sweep))


def _recorded(upload: Upload) -> list[int]:
    """The recorded chunk indices (every index when the records are not given)."""
    if upload.chunks is None:
        return list(range(upload.total_chunks))
    return [c.index for c in upload.chunks]


def _renice(nice: int) -> None:
    """Lower this thread's CPU priority (Linux nice values are per thread)."""
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:
            pass
