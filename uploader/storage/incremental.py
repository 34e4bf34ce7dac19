"""Incremental merge: hash the upload's data file in order while chunks arrive.

Why: without it, ``complete`` reads the whole file once to compute its MD5
after the last byte arrived (seconds for 4 GiB). Chunks are written in place
into one data file per upload (``datafile.py``), so nothing is left to copy:
as soon as the next chunk in order is stored, one dedicated thread feeds its
bytes to a running MD5 straight from the page cache (mmap, no copy), so
folding never takes more than one core.

It is a pure optimisation. A ``hashlib`` object cannot be pickled, so the
running state lives only in this process; the merge uses it only when it
provably covers the recorded chunks, and otherwise hashes the whole file:

- Each folded chunk keeps the MD5 the receiver computed over exactly the
  bytes it wrote. A chunk is only rewritten under the upload's lock after
  its record was cleared; such a rewrite reports itself here again, and a
  different MD5 for a folded index breaks the state.
- At merge time every recorded chunk's MD5 (the database is the truth) must
  equal the one folded for that index; a chunk replaced after folding (here or
  on another instance) breaks the match, and the full hash runs instead.
- A crash loses only the memory state; there is no file of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mmap
import os
import threading
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from ..models import ChunkRecord, Upload
from .layout import Layout

log = logging.getLogger("uploader.storage.incremental")
MMAP_MIN = 64 << 10      # below this, pread is cheaper than mapping
READ_PIECE = 1 << 20     # hash a chunk through mapped windows of this size
# Chunks waiting for an earlier one: past this the upload arrives too far out
# of order to be worth following (memory stays bounded); it merges the full way.
MAX_PENDING = 1024


@dataclass
class FoldState:
    """What one process has folded of one upload. Fields are guarded by
    ``lock``: the event loop adds pending chunks while the fold thread folds."""

    upload: Upload
    md5: Any = field(default_factory=lambda: hashlib.md5(usedforsecurity=False))
    next: int = 0                          # chunks [0, next) are folded
    merged: int = 0                        # bytes hashed
    folded: list[str] = field(default_factory=list)          # md5 per folded chunk
    pending: dict[int, str] = field(default_factory=dict)
    broken: bool = False
    job: "asyncio.Future[None] | None" = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Set by the merge that took this state over: told ``merged`` after each
    # chunk folded while the merge waits for the fold (status merged_bytes).
    progress: Callable[[int], None] | None = None


class IncrementalMerges:
    """``run`` runs blocking file work in the backend's I/O pool (file
    removal); ``executor`` is the fold's own single thread."""

    def __init__(self, layout: Layout, executor: Executor,
                 run: Callable[..., Awaitable[Any]], *, fsync: bool,
                 max_uploads: int = 1000) -> None:
        self.layout = layout
        self.executor = executor  # one thread: folding uses at most one core
        self.run = run
        self.fsync = fsync
        self.max_uploads = max_uploads
        self._states: dict[str, FoldState] = {}

    # -- on the event loop ------------------------------------------------------

    def chunk_stored(self, upload: Upload, index: int, md5: str) -> None:
        """A chunk's bytes are in place (and recorded): fold it when it is next."""
        st = self._states.get(upload.upload_id)
        if st is None:
            if len(self._states) >= self.max_uploads:
                return  # bounded memory: such uploads merge the full way
            st = self._states[upload.upload_id] = FoldState(upload)
        with st.lock:
            if st.broken:
                return
            if len(st.pending) >= MAX_PENDING and index not in st.pending:
                st.broken = True
                st.pending.clear()
                return
            if index < st.next:
                if st.folded[index] != md5:
                    # Replaced by different bytes after folding: the running
                    # MD5 cannot be rewound, so this upload merges the full way.
                    st.broken = True
                return
            st.pending[index] = md5
        self._kick(st)

    def _kick(self, st: FoldState) -> None:
        if st.job is not None or st.broken or st.next not in st.pending:
            return
        job = asyncio.get_running_loop().run_in_executor(self.executor, self._fold, st)
        st.job = job
        job.add_done_callback(lambda j: self._job_done(st, j))

    def _job_done(self, st: FoldState, job: "asyncio.Future[None]") -> None:
        st.job = None
        if job.cancelled() or job.exception() is not None:
            if not job.cancelled():
                log.warning("incremental merge of %s stopped: %r", st.upload.upload_id,
                            job.exception())
            st.broken = True
            return
        if self._states.get(st.upload.upload_id) is st:
            self._kick(st)

    def merged_ahead(self, upload_id: str) -> int:
        """Bytes already folded for this upload in this process (0 if none)."""
        st = self._states.get(upload_id)
        return 0 if st is None or st.broken else st.merged

    async def take(self, upload_id: str,
                   progress: Callable[[int], None] | None = None) -> FoldState | None:
        """Detach the state for a merge (called under the merge lock), after
        its running fold job, if any, has finished. The fold may be far
        behind (a busy machine, fold_nice): ``progress`` hears its bytes
        meanwhile."""
        st = self._states.pop(upload_id, None)
        if st is None:
            return None
        with st.lock:
            st.progress = progress
            merged = st.merged
        if progress is not None:
            progress(merged)
        while st.job is not None:
            try:
                await asyncio.shield(st.job)
            except Exception:
                pass
            await asyncio.sleep(0)  # let _job_done run
        return st

    async def drop(self, upload_id: str) -> None:
        """Forget an upload (deleted, expired, completed)."""
        await self.take(upload_id)

    async def close(self) -> None:
        for upload_id in list(self._states):
            await self.drop(upload_id)

    # -- in the fold thread -------------------------------------------------------

    def _fold(self, st: FoldState) -> None:
        fd: int | None = None
        try:
            while True:
                with st.lock:
                    if st.broken or st.next not in st.pending:
                        return
                    index = st.next
                    md5 = st.pending[index]
                if fd is None:
                    try:
                        fd = os.open(self.layout.data_path(st.upload.upload_id),
                                     os.O_RDONLY | os.O_CLOEXEC)
                    except FileNotFoundError:
                        with st.lock:
                            st.broken = True  # deleted meanwhile
                        return
                length = st.upload.chunk_length(index)
                hash_region(fd, st.merged, length, st.md5)
                with st.lock:
                    st.folded.append(md5)
                    st.next += 1
                    st.merged += length
                    newer = st.pending.pop(index, None)
                    if newer is not None and newer != md5:
                        st.broken = True  # rewritten while we hashed it
                    report, merged = st.progress, st.merged
                if report is not None:
                    report(merged)
        finally:
            if fd is not None:
                os.close(fd)


def usable(st: FoldState, upload: Upload, chunks: Sequence[ChunkRecord] | None) -> bool:
    """Whether the folded prefix provably equals the recorded chunks."""
    if st.broken or chunks is None or st.next == 0:
        return False
    if (st.upload.size, st.upload.chunk_size) != (upload.size, upload.chunk_size):
        return False
    by_index = {c.index: c.md5 for c in chunks}
    return all(by_index.get(i) == md5 for i, md5 in enumerate(st.folded))


def hash_region(fd: int, offset: int, length: int, md5: Any) -> None:
    """Feed bytes ``[offset, offset + length)`` of ``fd`` to ``md5`` from the
    page cache: mapped windows (no copy) for large ranges, pread below."""
    if length < MMAP_MIN:
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise OSError(f"file shorter than {offset + length} bytes")
        md5.update(data)
        return
    end = offset + length
    pos = offset
    while pos < end:
        # mmap offsets must be page aligned; windows bound the mapped RSS.
        base = pos - pos % mmap.ALLOCATIONGRANULARITY
        size = min(READ_PIECE, end - base)
        with mmap.mmap(fd, size, prot=mmap.PROT_READ, offset=base) as m:
            with memoryview(m) as view:
                md5.update(view[pos - base:])
        pos = base + size
