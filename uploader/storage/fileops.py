"""Low-level file moves shared by the local backend and its incremental merge."""

from __future__ import annotations

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
