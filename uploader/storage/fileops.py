"""Low-level file work shared by the local backend, its incremental merge and
the S3 backend's staging: appends, kernel-side copies, fsyncs, and the
translation of a full disk into the error table's ``insufficient_storage``."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import UploadError
from .base import MissingChunkData

READ_PIECE = 1 << 20


def storage_error(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return UploadError("insufficient_storage", "not enough storage space")
    return exc


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quiet(path: Path | str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def create_exclusive(path: Path, mode: int) -> int:
    """A new file for writing (its folder made first); a full disk is 507."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise storage_error(exc) from exc


class StagedWriter:
    """Appends a chunk's body to its own staged file (in a worker thread);
    the local and S3 chunk writers share it and differ in how they commit."""

    def __init__(self, fd: int | None) -> None:
        self._fd: int | None = fd

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise RuntimeError("chunk writer is closed")
        try:
            write_all(self._fd, data)
        except OSError as exc:
            raise storage_error(exc) from exc

    def writev(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self.write(piece)

    async def revert(self) -> None:
        """Nothing to take back by default: an S3 part that no record names
        is never used by the merge (it lists the recorded parts)."""

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def copy_range(src: int, dst: int, length: int) -> None:
    """Kernel-side copy of ``length`` bytes from ``src``'s position to ``dst``'s
    (both advance); a source shorter than that is missing chunk data."""
    src_off, dst_off = os.lseek(src, 0, os.SEEK_CUR), os.lseek(dst, 0, os.SEEK_CUR)
    if os.fstat(src).st_size - src_off < length:
        raise MissingChunkData([])
    copy_at(src, src_off, dst, dst_off, length)
    os.lseek(src, src_off + length, os.SEEK_SET)
    os.lseek(dst, dst_off + length, os.SEEK_SET)


def copy_at(src: int, src_off: int, dst: int, dst_off: int, length: int) -> None:
    """Kernel-side copy between offsets (pread/pwrite where it cannot)."""
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(src, dst, length - done, src_off + done, dst_off + done)
            if n == 0:
                break
            done += n
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while done < length:
        data = os.pread(src, min(READ_PIECE, length - done), src_off + done)
        if not data:
            raise OSError(errno.EIO, "source shorter than expected")
        pwrite_all(dst, data, dst_off + done)
        done += len(data)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def pwritev_all(fd: int, pieces: list[bytes], offset: int) -> None:
    """All ``pieces`` at ``offset`` on, in as few system calls as the
    kernel allows (IOV_MAX pieces per call)."""
    views = [memoryview(p) for p in pieces]
    while views:
        batch = views[:1024]
        n = os.pwritev(fd, batch, offset)
        offset += n
        total = sum(len(v) for v in batch)
        if n == total:
            del views[:len(batch)]
            continue
        # A short write: drop what went out, go on from the rest.
        while n:
            if n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][n:]
                n = 0
