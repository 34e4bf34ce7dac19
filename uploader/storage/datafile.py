"""One preallocated data file per upload (local backend), and what guards it.

Every chunk is written at ``index * chunk_size`` of ``tmp/<id>/data`` while
its body streams in: no file, rename or directory fsync per chunk, and
``complete`` hard-links the file into ``store/``, nothing copied. Three
things keep the wire rules (docs/architecture.md, section 7):

- **claims** (``tmp/<id>/claims``, one byte per chunk): a first writer takes
  the chunk's claim (an in-process set, since POSIX record locks do not
  exclude threads of one process, plus a ``lockf`` on that byte, which
  excludes every other process on this data_dir and which the kernel frees
  when a writer is killed), then sets the byte to CLAIMED, and to STORED at
  its commit. A byte that is not FREE means "these bytes may be recorded":
  every later writer of the chunk receives into a scratch file and only
  touches the data file under the upload's lock. A merge takes only STORED
  chunks as present.
- **the flush barrier**: writers of one upload that finished writing share
  one ``fdatasync`` (the first waiter syncs; those that finished before that
  sync started ride on it), so a 200 still means durable at one flush per
  burst instead of one per chunk.
- **one entry per process** for each running upload: the two open files and
  the barrier, counted by their users and closed when the last one leaves
  and the cache is over its size (or the upload is deleted or merged).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import resource
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from ..models import Upload
from .fileops import copy_at, fsync_dir, listdir, storage_error, unlink_quiet
from .layout import FILE_MODE, Layout

# The claims byte of a chunk: never written / written (perhaps partly: a
# first writer still at it, or one that gave up) / stored whole by a commit.
FREE, CLAIMED, STORED = b"\x00", b"\x01", b"\x02"


class FlushBarrier:
    """Group durability of one file: ``sync`` returns once an fdatasync that
    started after the caller's writes has finished."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._started = 0   # syncs begun
        self._done = 0      # syncs finished (every one up to this covered)
        self._failed = 0    # the last sync that raised
        self._error: OSError | None = None
        self._syncing = False
        self.waiting = 0    # writers waiting for a flush to cover them

    def sync(self, flush: Callable[[], None]) -> None:
        with self._cond:
            # A sync running now may have started before our last write:
            # only the next one is sure to cover it.
            need = self._started + 1
            while self._done < need:
                if self._failed >= need and self._error is not None:
                    raise self._error
                if self._syncing:
                    self.waiting += 1
                    self._cond.wait()
                    self.waiting -= 1
                    continue
                self._started += 1
                mine = self._started
                self._syncing = True
                self._cond.release()
                try:
                    flush()
                except OSError as exc:
                    self._cond.acquire()
                    # Linux reports a writeback error once: every writer
                    # this sync was to cover must hear it.
                    self._failed, self._error = mine, exc
                    self._syncing = False
                    self._cond.notify_all()
                    raise
                self._cond.acquire()
                self._syncing = False
                self._done = mine
                self._cond.notify_all()


class UploadFiles:
    """The open data and claims files of one upload in this process."""

    def __init__(self, upload: Upload, data_fd: int, claims_fd: int, fsync: bool) -> None:
        self.upload_id = upload.upload_id
        self.chunk_size = upload.chunk_size
        self.data_fd, self.claims_fd = data_fd, claims_fd
        self.fsync = fsync
        self.users = 0
        self.barrier = FlushBarrier()

    def offset(self, index: int) -> int:
        return index * self.chunk_size

    def sync(self) -> None:
        """Make every write made before this call durable (shared flush)."""
        if self.fsync:
            self.barrier.sync(self._flush)

    def _flush(self) -> None:
        # The data file only. The claims file is never flushed for a chunk:
        # a merge takes a chunk only when its byte says STORED, which a
        # commit writes after this flush; a claims byte lost with the page
        # cache (a power cut, never a process crash) leaves its chunk not
        # STORED, so missing to the merge and sent again, whatever its
        # record says (the same as an unflushed STORED byte always did).
        os.fdatasync(self.data_fd)

    def close(self) -> None:
        for fd in (self.data_fd, self.claims_fd):
            try:
                os.close(fd)
            except OSError:
                pass


class DataFiles:
    """This process's open ``UploadFiles``; every method runs in a worker
    thread (they open, create and lock files)."""

    def __init__(self, layout: Layout, *, fsync: bool, max_open: int | None = None) -> None:
        self.layout = layout
        self.fsync = fsync
        self.max_open = max_open if max_open is not None else default_max_open()
        self._lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(64)]
        # Uploads whose folder entries this process has made durable: a file
        # closed by the LRU and opened again needs no second directory fsync.
        self._durable: set[str] = set()
        self._open: OrderedDict[str, UploadFiles] = OrderedDict()
        self._claimed: set[tuple[str, int]] = set()
        # Writers received aside waiting for a chunk's first writer to finish.
        self._waiters: dict[tuple[str, int], list[tuple[asyncio.AbstractEventLoop,
                                                        asyncio.Future[None]]]] = {}

    def acquire(self, upload: Upload) -> UploadFiles:
        """The upload's files, created (with the old per-chunk layout
        migrated in) on first use; release them with :meth:`release`."""
        upload_id = upload.upload_id
        with self._lock:
            files = self._take(upload_id)
        if files is not None:
            return files
        # Opening makes folders, files and fsyncs: under the upload's own
        # stripe, never the global lock every chunk of every upload takes
        # (with more uploads than max_open, files are reopened all the time).
        with self._stripes[hash(upload_id) % len(self._stripes)]:
            with self._lock:
                files = self._take(upload_id)
            if files is not None:
                return files
            try:
                files = self._open_files(upload)
            except OSError as exc:
                raise storage_error(exc) from exc
            with self._lock:
                self._open[upload_id] = files
                files.users += 1
                self._trim()
            return files

    def _take(self, upload_id: str) -> UploadFiles | None:
        files = self._open.get(upload_id)
        if files is not None:
            self._open.move_to_end(upload_id)
            files.users += 1
        return files

    def release(self, files: UploadFiles) -> None:
        with self._lock:
            files.users -= 1
            if files.users <= 0 and self._open.get(files.upload_id) is not files:
                files.close()  # forgotten while in use: the last user closes
            self._trim()

    def forget(self, upload_id: str) -> None:
        """Close the upload's files (deleted, expired, merged)."""
        with self._lock:
            self._durable.discard(upload_id)
            files = self._open.pop(upload_id, None)
            if files is not None and files.users <= 0:
                files.close()

    def _trim(self) -> None:
        if len(self._open) <= self.max_open:
            return
        for upload_id, files in list(self._open.items()):
            if len(self._open) <= self.max_open:
                return
            if files.users <= 0:
                del self._open[upload_id]
                files.close()

    def _open_files(self, upload: Upload) -> UploadFiles:
        folder = self.layout.chunk_dir(upload.upload_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        claims_fd = open_or_create(self.layout.claims_path(upload.upload_id),
                                   upload.total_chunks)
        try:
            data_fd = open_or_create(self.layout.data_path(upload.upload_id), upload.size)
        except BaseException:
            os.close(claims_fd)
            raise
        files = UploadFiles(upload, data_fd, claims_fd, self.fsync)
        try:
            migrate_chunk_files(self.layout, files, upload)
            if self.fsync and upload.upload_id not in self._durable:
                # Once per upload and process (not per chunk): the entries of
                # both files, and the upload's folder in tmp/, are durable
                # before any chunk written into them is answered.
                fsync_dir(folder)
                fsync_dir(folder.parent)
                with self._lock:
                    self._durable.add(upload.upload_id)
        except BaseException:
            files.close()
            raise
        return files

    # -- claims ------------------------------------------------------------------

    @property
    def claims_held(self) -> int:
        """First writers writing in place in this process now."""
        with self._lock:
            return len(self._claimed)

    def claim(self, files: UploadFiles, index: int) -> bool:
        """Take the first write of chunk ``index``: True when no writer ever
        wrote it and none is writing it (the claim is held until
        :meth:`unclaim`); False sends the writer to a scratch file."""
        key = (files.upload_id, index)
        with self._lock:
            if key in self._claimed:
                return False
            self._claimed.add(key)
        try:
            fcntl.lockf(files.claims_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, index, os.SEEK_SET)
        except OSError as exc:
            self._drop_claim(key)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False  # another process writes it now
            raise storage_error(exc) from exc
        try:
            if os.pread(files.claims_fd, 1, index) not in (FREE, b""):
                self._unlock(files, index)
                self._drop_claim(key)
                return False
            os.pwrite(files.claims_fd, CLAIMED, index)
        except OSError as exc:
            self._unlock(files, index)
            self._drop_claim(key)
            raise storage_error(exc) from exc
        return True

    @staticmethod
    def mark(files: UploadFiles, index: int, state: bytes) -> None:
        """Set the chunk's claims byte (under the upload's lock, or its claim)."""
        try:
            os.pwrite(files.claims_fd, state, index)
        except OSError as exc:
            raise storage_error(exc) from exc

    def unclaim(self, files: UploadFiles, index: int) -> None:
        self._unlock(files, index)
        self._drop_claim((files.upload_id, index))

    def _drop_claim(self, key: tuple[str, int]) -> None:
        with self._lock:
            self._claimed.discard(key)
            waiters = self._waiters.pop(key, [])
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_wake, fut)

    async def wait_released(self, files: UploadFiles, index: int) -> None:
        """Return once no first writer writes chunk ``index`` in place (here
        or in another process). A writer received aside waits for it before
        its commit may compare or copy bytes in place: otherwise the first
        writer's last pieces could land after its copy. Awaited outside any
        lock, and never in the I/O pool the first writer needs."""
        key = (files.upload_id, index)
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if key not in self._claimed:
                    break
                fut: asyncio.Future[None] = loop.create_future()
                self._waiters.setdefault(key, []).append((loop, fut))
            await fut
        await asyncio.to_thread(_wait_lockf, files.claims_fd, index)

    @staticmethod
    def _unlock(files: UploadFiles, index: int) -> None:
        try:
            fcntl.lockf(files.claims_fd, fcntl.LOCK_UN, 1, index, os.SEEK_SET)
        except OSError:
            pass  # closing the file frees it anyway


def default_max_open() -> int:
    """Uploads kept open (two descriptors each): an eighth of the process's
    descriptor limit, between 64 and 1024. Fewer than the uploads in flight
    and every chunk reopens its files (measured: PUTs/s with 200 uploads)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(64, min(1024, soft // 8))


def _wake(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


def _wait_lockf(fd: int, index: int) -> None:
    """Block until no other process holds the chunk's claim. (Within this
    process a POSIX lock never blocks: the in-process set covers that.)"""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, index, os.SEEK_SET)
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, index, os.SEEK_SET)
    except OSError:
        pass  # a closed file frees every claim on it anyway


def open_or_create(path: Path, size: int) -> int:
    """The file at ``path`` for reading and writing, made at ``size`` bytes
    if absent. It is built under a fresh name and linked into place, so
    another process sees it whole or not at all."""
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        pass
    scratch = path.with_name(f"{path.name}.{secrets.token_hex(6)}.part")
    fd = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        # Sparse: space is taken as chunks land, so a full disk is the 507
        # of the chunk that meets it, as before (posix_fallocate measured no
        # faster here, see bench/README.md).
        os.ftruncate(fd, size)
        try:
            os.link(scratch, path)
        except FileExistsError:
            os.close(fd)
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except BaseException:
        os.close(fd)
        unlink_quiet(scratch)
        raise
    unlink_quiet(scratch)
    return fd


def migrate_chunk_files(layout: Layout, files: UploadFiles, upload: Upload) -> None:
    """Move chunks stored by an earlier release (``chunk_<index>`` files) into
    the data file, each with its claim set, synced before the old file goes:
    their records stay true throughout."""
    folder = layout.chunk_dir(upload.upload_id)
    old = [(i, folder / n) for n in listdir(folder)
           if (i := Layout.chunk_index(n)) is not None and i < upload.total_chunks]
    if not old:
        return
    for index, path in old:
        try:
            src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            length = upload.chunk_length(index)
            if os.fstat(src).st_size != length:
                continue  # not a whole chunk: its record (if any) is forgotten at merge
            copy_at(src, 0, files.data_fd, files.offset(index), length)
            os.pwrite(files.claims_fd, STORED, index)
        finally:
            os.close(src)
    os.fsync(files.data_fd)
    os.fsync(files.claims_fd)
    for _, path in old:
        unlink_quiet(path)
