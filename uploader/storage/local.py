"""Chunk bytes and merged files on the local disk (ARCHITECTURE.md section 4).

    <data_dir>/tmp/<id>/chunk_<index>                finished chunk
    <data_dir>/tmp/<id>/chunk_<index>.<rand>.part    chunk being received
    <data_dir>/store/<id>_<name>.<version>.part      merge in progress
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
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import AsyncIterator, Callable

from ..errors import Unavailable, UploadError
from ..models import Upload
from ..naming import is_upload_id
from .base import StagedFile

READ_PIECE = 1 << 20
DIR_MODE, FILE_MODE = 0o700, 0o600


class MissingChunkData(Exception):
    """Chunks recorded in the database whose bytes are not on disk."""

    def __init__(self, indices: list[int]) -> None:
        super().__init__(f"chunk data missing for {indices[:20]}")
        self.indices = indices


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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy_range(src: int, dst: int, length: int) -> None:
    """Kernel-side copy (no bytes through Python); read/write where the
    filesystem pair cannot do it."""
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(src, dst, length - done)
            if n == 0:
                break
            done += n
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while done < length:
        data = os.pread(src, min(READ_PIECE, length - done), done)
        if not data:
            break
        _write_all(dst, data)
        done += len(data)
    if done != length:
        raise MissingChunkData([])


class LocalChunkWriter:
    def __init__(self, storage: "LocalStorage", part: Path, final: Path, fd: int) -> None:
        self._storage = storage
        self._part = part
        self._final = final
        self._fd: int | None = fd

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise RuntimeError("chunk writer is closed")
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            raise _storage_error(exc) from exc

    def _sync(self) -> None:
        assert self._fd is not None
        try:
            if self._storage.fsync:
                os.fdatasync(self._fd)
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
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            os.unlink(self._part)
        except FileNotFoundError:
            pass

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
    def __init__(self, data_dir: Path, executor: Executor, *, fsync: bool = True) -> None:
        self.root = Path(data_dir).resolve()
        self.tmp = self.root / "tmp"
        self.store = self.root / "store"
        self.executor = executor
        self.fsync = fsync

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
        pass

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

    def _key_for(self, upload: Upload) -> str:
        return f"store/{upload.upload_id}_{upload.filename}"

    def _merge_sync(self, upload: Upload, version: int,
                    progress: Callable[[int], None] | None) -> StagedFile:
        key = self._key_for(upload)
        final = self.final_path(key)
        part = final.with_name(f"{final.name}.{version}.part")
        fds: list[int] = []
        missing: list[int] = []
        try:
            for index in range(upload.total_chunks):
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
            md5 = hashlib.md5(usedforsecurity=False)
            out = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            try:
                merged = 0
                for index, fd in enumerate(fds):
                    length = upload.chunk_length(index)
                    # Hash from the page cache, then let the kernel copy: the
                    # bytes cross into Python once, for MD5 only.
                    offset = 0
                    while offset < length:
                        piece = os.pread(fd, min(READ_PIECE * 4, length - offset), offset)
                        if not piece:
                            raise MissingChunkData([index])
                        md5.update(piece)
                        offset += len(piece)
                    _copy_range(fd, out, length)
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
                    progress: Callable[[int], None] | None = None) -> StagedFile:
        return await self.run(self._merge_sync, upload, version, progress)

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
