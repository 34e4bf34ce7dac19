"""Chunk bytes and merged files on the local disk (docs/architecture.md: on-disk layout).

    <data_dir>/tmp/<id>/chunk_<index>                finished chunk
    <data_dir>/tmp/<id>/chunk_<index>.<rand>.part    chunk being received
    <data_dir>/store/<id>_<name>.<version>.part      merge in progress
    <data_dir>/store/<id>_<name>.inc-<rand>.part     incremental merge (incremental.py)
    <data_dir>/store/<id>_<name>                     finished file

Every blocking call runs in the shared I/O thread pool. The merge part file
carries the merge version so two mergers of one upload (a stale one and its
successor) never write the same file.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import secrets
import shutil
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator, Callable, Sequence

from ..errors import Unavailable, UploadError
from ..models import ChunkRecord, Upload
from ..naming import is_upload_id
from .base import StagedFile
from .fileops import READ_PIECE, MissingChunkData  # noqa: F401 (re-exported)
from .fileops import write_all as _write_all
from .incremental import FoldState, IncrementalMerges, discard, hash_and_copy, usable

DIR_MODE, FILE_MODE = 0o700, 0o600


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return UploadError("insufficient_storage", "not enough storage space")
    return exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedWriter:
    """Appends a chunk's body to its own staged file (in a worker thread);
    the local and S3 chunk writers share it and differ in how they commit."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise RuntimeError("chunk writer is closed")
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            raise _storage_error(exc) from exc

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LocalChunkWriter(StagedWriter):
    def __init__(self, storage: "LocalStorage", part: Path, final: Path, fd: int) -> None:
        super().__init__(fd)
        self._storage = storage
        self._part = part
        self._final = final
        # (st_dev, st_ino) of the committed file: ties its bytes to the MD5
        # the receiver computed, for the incremental merge.
        self.identity: tuple[int, int] | None = None

    def _sync(self) -> None:
        assert self._fd is not None
        try:
            if self._storage.fsync:
                os.fdatasync(self._fd)
            st = os.fstat(self._fd)
            self.identity = (st.st_dev, st.st_ino)
            os.close(self._fd)
            self._fd = None
        except OSError as exc:
            self._abort()
            raise _storage_error(exc) from exc

    def _commit(self) -> None:
        if self._fd is not None:
            self._sync()
        try:
            os.replace(self._part, self._final)
            if self._storage.fsync:
                _fsync_dir(self._final.parent)
        except OSError as exc:
            self._abort()
            raise _storage_error(exc) from exc

    def _abort(self) -> None:
        self._close()
        _unlink(self._part)

    async def sync(self) -> None:
        await self._storage.run(self._sync)

    async def commit(self, md5: str | None = None) -> None:
        await self._storage.run(self._commit)

    async def abort(self) -> None:
        try:
            await self._storage.run(self._abort)
        except Exception:  # abort must never raise: it runs from cleanup paths
            pass


class LocalStorage:
    def __init__(self, data_dir: Path, executor: Executor, *, fsync: bool = True,
                 incremental: bool = True, fold_nice: int = 0) -> None:
        self.root = Path(data_dir).resolve()
        self.tmp = self.root / "tmp"
        self.store = self.root / "store"
        self.executor = executor
        self.fsync = fsync
        self._fold_pool: ThreadPoolExecutor | None = None
        self.incremental: IncrementalMerges | None = None
        if incremental:
            self._fold_pool = ThreadPoolExecutor(1, thread_name_prefix="uploader-fold",
                                                 initializer=_renice, initargs=(fold_nice,))
            self.incremental = IncrementalMerges(self, self._fold_pool)
        # Merges that reused an incremental state / that read every chunk,
        # and the bytes reused (for metrics, and tests of the fallback).
        self.merge_stats = {"incremental": 0, "full": 0, "reused_bytes": 0}

    async def run(self, fn: Callable, *args: object):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _inside(self, path: Path) -> Path:
        """Refuse any path that would resolve outside data_dir (defence in
        depth: ids and names are already validated)."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise UploadError("invalid_request", "path outside the storage root")
        return resolved

    def _chunk_dir(self, upload_id: str) -> Path:
        if not is_upload_id(upload_id):
            raise UploadError("not_found", "no such upload")
        return self._inside(self.tmp / upload_id)

    def chunk_path(self, upload_id: str, index: int) -> Path:
        return self._chunk_dir(upload_id) / f"chunk_{int(index)}"

    def final_path(self, key: str) -> Path:
        return self._inside(self.root / key)

    async def start(self) -> None:
        def make() -> None:
            for d in (self.root, self.tmp, self.store):
                d.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        await self.run(make)

    async def close(self) -> None:
        if self.incremental is not None:
            await self.incremental.close()
        if self._fold_pool is not None:
            self._fold_pool.shutdown(wait=True)

    # -- the optional IncrementalMerge capability (storage/base.py) ------------

    def chunk_stored(self, upload: Upload, index: int, md5: str, writer: object) -> None:
        identity = getattr(writer, "identity", None)
        if self.incremental is not None and identity is not None:
            self.incremental.chunk_stored(upload, index, md5, identity)

    def merged_ahead(self, upload_id: str) -> int:
        return self.incremental.merged_ahead(upload_id) if self.incremental else 0

    async def ping(self) -> None:
        def probe() -> None:
            # A real create + unlink in tmp/ (where chunks land), not
            # os.access: that says yes to root on a read-only mount, and
            # a vanished data_dir is never recreated here (only start() does).
            if not self.store.is_dir():
                raise FileNotFoundError(self.store)
            probe_path = self.tmp / f".ping.{secrets.token_hex(6)}"
            os.close(os.open(probe_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             FILE_MODE))
            os.unlink(probe_path)
        try:
            await self.run(probe)
        except OSError as exc:
            raise Unavailable("storage is not writable") from exc

    async def open_chunk(self, upload: Upload, index: int) -> LocalChunkWriter:
        final = self.chunk_path(upload.upload_id, index)
        part = final.with_name(f"{final.name}.{secrets.token_hex(6)}.part")

        def create() -> int:
            final.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            try:
                return os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            except OSError as exc:
                raise _storage_error(exc) from exc

        fd = await self.run(create)
        return LocalChunkWriter(self, part, final, fd)

    def key_for(self, upload: Upload) -> str:
        return f"store/{upload.upload_id}_{upload.filename}"

    def _merge_sync(self, upload: Upload, version: int,
                    progress: Callable[[int], None] | None, state: FoldState | None = None,
                    chunks: Sequence[ChunkRecord] | None = None) -> StagedFile:
        key = self.key_for(upload)
        final = self.final_path(key)
        part = final.with_name(f"{final.name}.{version}.part")
        fds: list[int] = []
        missing: list[int] = []
        start, merged, md5 = 0, 0, hashlib.md5(usedforsecurity=False)
        if state is not None:
            if usable(state, upload, chunks):
                try:
                    # Our own version's part file: fencing works as for a full merge.
                    os.replace(state.path, part)
                    start, merged, md5 = state.next, state.merged, state.md5
                except FileNotFoundError:
                    pass  # swept as stale: merge the full way
            else:
                discard(state)
        try:
            for index in range(start, upload.total_chunks):
                try:
                    fd = os.open(self.chunk_path(upload.upload_id, index), os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    missing.append(index)
                    continue
                if os.fstat(fd).st_size != upload.chunk_length(index):
                    os.close(fd)
                    missing.append(index)
                    continue
                fds.append(fd)
            if missing:
                raise MissingChunkData(missing)
            self.merge_stats["incremental" if start else "full"] += 1
            self.merge_stats["reused_bytes"] += merged
            out = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            try:
                # Keep the folded prefix (if any), drop anything past it.
                os.ftruncate(out, merged)
                os.lseek(out, merged, os.SEEK_SET)
                if progress:
                    progress(merged)
                for index, fd in enumerate(fds, start=start):
                    length = upload.chunk_length(index)
                    # Hash from the page cache (mmap, no copy), then let the
                    # kernel copy the bytes.
                    hash_and_copy(fd, out, length, md5)
                    merged += length
                    if progress:
                        progress(merged)
                if self.fsync:
                    os.fsync(out)
            finally:
                os.close(out)
        except OSError as exc:
            _unlink(part)
            raise _storage_error(exc) from exc
        except BaseException:
            _unlink(part)
            raise
        finally:
            for fd in fds:
                os.close(fd)
        return StagedFile(upload.upload_id, version, key, md5.hexdigest(), upload.size, str(part))

    async def merge(self, upload: Upload, version: int,
                    progress: Callable[[int], None] | None = None,
                    chunks: Sequence[ChunkRecord] | None = None) -> StagedFile:
        """With ``chunks`` (the recorded chunks), reuse this process's
        incremental merge when it provably matches them."""
        state = await self.incremental.take(upload.upload_id) if self.incremental else None
        return await self.run(self._merge_sync, upload, version, progress, state, chunks)

    def _staged_path(self, staged: StagedFile) -> Path:
        final = self.final_path(staged.key)
        return final.with_name(f"{final.name}.{staged.version}.part")

    async def publish(self, staged: StagedFile) -> None:
        def move() -> None:
            final = self.final_path(staged.key)
            os.replace(self._staged_path(staged), final)
            if self.fsync:
                _fsync_dir(final.parent)
        await self.run(move)

    async def discard(self, staged: StagedFile) -> None:
        await self.run(_unlink, self._staged_path(staged))

    async def staged_exists(self, staged: StagedFile) -> bool:
        return await self.run(self._staged_path(staged).exists)

    async def staged_uploads(self) -> list[tuple[str, int]]:
        """(upload id, merge version) of every merge .part in store/: a merge
        recorded ``completed`` whose process died before the rename leaves
        one, and it is the file the row promises."""
        def scan() -> list[tuple[str, int]]:
            found = []
            for name in _listdir(self.store):
                head, _, version = name.removesuffix(".part").rpartition(".")
                if (name.endswith(".part") and version.isdigit() and len(head) > 33
                        and is_upload_id(head[:32]) and head[32] == "_"):
                    found.append((head[:32], int(version)))
            return found
        return await self.run(scan)

    async def delete_chunks(self, upload_id: str) -> None:
        path = self._chunk_dir(upload_id)
        if self.incremental is not None:
            await self.incremental.drop(upload_id)
        def missing_is_fine(func: object, name: str, exc_info: tuple) -> None:
            # Absent is fine (another instance got there first); any other
            # failure must surface, or the sweep would drop the row and report
            # bytes removed that are still on disk.
            if not isinstance(exc_info[1], FileNotFoundError):
                raise exc_info[1]
        await self.run(lambda: shutil.rmtree(path, onerror=missing_is_fine))

    async def delete_file(self, key: str) -> None:
        await self.run(_unlink, self.final_path(key))

    async def file_size(self, key: str) -> int | None:
        path = self.final_path(key)

        def size() -> int | None:
            try:
                return os.stat(path).st_size
            except FileNotFoundError:
                return None
        return await self.run(size)

    async def read_file(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        path = self.final_path(key)
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
        """Bytes an unprivileged writer may still use under data_dir
        (quota.SpaceReporting)."""
        st = await self.run(os.statvfs, self.root)
        return st.f_bavail * st.f_frsize

    async def temp_upload_ids(self) -> list[str]:
        def ids() -> list[str]:
            try:
                return [n for n in os.listdir(self.tmp) if is_upload_id(n)]
            except FileNotFoundError:
                return []
        return await self.run(ids)

    async def recover(self, older_than: float = 0.0) -> int:
        """Remove ``.part`` files not touched for ``older_than`` seconds: the
        leftovers of writers and mergers that crashed. With several instances
        on one data_dir keep the age above the longest chunk or merge."""
        cutoff = time.time() - older_than

        def sweep() -> int:
            removed = 0
            dirs = [self.store] + [self.tmp / n for n in _listdir(self.tmp)]
            for d in dirs:
                for name in _listdir(d):
                    p = d / name
                    try:
                        if name.endswith(".part") and p.stat().st_mtime <= cutoff:
                            p.unlink()
                            removed += 1
                    except FileNotFoundError:
                        pass
            return removed
        return await self.run(sweep)


def _renice(nice: int) -> None:
    """Lower this thread's CPU priority (Linux nice values are per thread)."""
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:
            pass


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _unlink(path: Path | str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
