"""Low-level file moves shared by the local backend and its incremental merge."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

READ_PIECE = 1 << 20


class MissingChunkData(Exception):
    """Chunks recorded in the database whose bytes are not on disk."""

    def __init__(self, indices: list[int]) -> None:
        super().__init__(f"chunk data missing for {indices[:20]}")
        self.indices = indices


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def copy_range(src: int, dst: int, length: int) -> None:
    """Kernel-side copy (no bytes through Python) from ``src``'s position to
    ``dst``'s; read/write where the filesystem pair cannot do it."""
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
        write_all(dst, data)
        done += len(data)
    if done != length:
        raise MissingChunkData([])


SYNC_FILE_RANGE_WRITE = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing this range to disk now, without waiting (Linux
    sync_file_range; Python has no binding), so a later fsync has little left
    to flush. Best effort: a failure only means the fsync does it all."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)
