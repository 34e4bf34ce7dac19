"""Receiving one chunk: hash and write off the event loop, overlapped with reading.

Tornado hands ``data_received`` pieces on the event loop. Each piece is
queued; a single job at a time runs in the I/O pool, taking everything queued
so far, updating the MD5 and writing it (hashlib releases the GIL, so this
truly runs beside the loop). Only when more than ``max_buffered`` bytes wait
does ``feed`` return a future, which Tornado awaits before reading on: memory
per chunk stays bounded and a slow disk slows only its own sender.
"""

from __future__ import annotations

import asyncio
import hashlib
from concurrent.futures import Executor
from typing import Any, Callable

from .errors import UploadError
from .storage.base import ChunkWriter, Forget


class ChunkReceiver:
    def __init__(self, writer: ChunkWriter, executor: Executor, *, upload_id: str, index: int,
                 total_chunks: int, expected_size: int, expected_md5: str | None,
                 max_buffered: int = 4 << 20) -> None:
        self.writer = writer
        self.executor = executor
        self.upload_id = upload_id
        self.index = index
        self.total_chunks = total_chunks
        self.expected_size = expected_size
        self.expected_md5 = expected_md5
        self.max_buffered = max_buffered
        self.received = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        self._job: asyncio.Future[Any] | None = None
        self._error: BaseException | None = None
        # open -> finishing -> verified -> finished, or aborted from any but finished
        self._state = "open"
        self._digest: str | None = None

    @property
    def settled(self) -> bool:
        """In place or dropped: no longer a chunk in flight."""
        return self._state in ("finished", "aborted")

    @property
    def done(self) -> bool:
        """The body is complete (or dropped): the handler need not discard it."""
        return self._state != "open"

    def _process(self, pieces: list[bytes]) -> None:
        # Runs in a worker thread; only this job touches the hash and the fd.
        # One executor call per batch: hash each piece (GIL released), then
        # write them all with one call (pwritev in place).
        for piece in pieces:
            self._md5.update(piece)
        self.writer.writev(pieces)

    def _start_job(self) -> None:
        pieces, self._queue = self._queue, []
        self._queued_bytes = 0
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self.executor, self._process, pieces)
        job.add_done_callback(self._job_done)
        self._job = job

    def _job_done(self, job: "asyncio.Future[Any]") -> None:
        # Runs as the job's done callback, or earlier from _drain: whichever
        # comes first handles the job, the other sees it is not current.
        if self._job is not job:
            return
        self._job = None
        if job.cancelled():
            self._error = self._error or asyncio.CancelledError()
        elif job.exception() is not None:
            self._error = self._error or job.exception()
            self._queue, self._queued_bytes = [], 0
        if self._queue and self._error is None:
            self._start_job()

    def feed(self, data: bytes) -> "asyncio.Future[Any] | None":
        if self._state != "open" or self._error is not None:
            return None
        self.received += len(data)
        if self.received > self.expected_size:
            # Keep counting but stop storing: finish() answers too_large.
            return None
        self._queue.append(data)
        self._queued_bytes += len(data)
        if self._job is None:
            self._start_job()
        elif self._queued_bytes >= self.max_buffered:
            # A failed write must not raise into Tornado's body reader (that
            # drops the connection without an answer): wait quietly, and let
            # finish() report the error as JSON.
            return asyncio.ensure_future(self._wait_quietly())
        return None

    async def _wait_quietly(self) -> None:
        job = self._job
        if job is not None:
            try:
                await asyncio.shield(job)
            except BaseException:
                pass

    async def _drain(self) -> None:
        """Wait until everything queued is hashed and written."""
        while self._job is not None:
            job = self._job
            try:
                await asyncio.shield(job)
            except BaseException:
                if not job.done():
                    raise  # we were cancelled, not the job
            self._job_done(job)

    async def finish(self) -> tuple[int, str]:
        """Wait for the last bytes, check size and MD5, make the bytes durable.
        Returns (size, md5); :meth:`commit` then puts the chunk in place."""
        digest = await self._settle(self._verify)
        self._state = "verified"
        return self.received, digest

    def _verify(self, digest: str) -> None:
        if self.received > self.expected_size:
            raise UploadError("too_large", "chunk body is longer than this chunk",
                              expected=self.expected_size)
        if self.received < self.expected_size:
            raise UploadError("size_mismatch", "chunk body is shorter than this chunk",
                              expected=self.expected_size, received=self.received)
        if self.expected_md5 and digest != self.expected_md5:
            raise UploadError("checksum_mismatch", "chunk MD5 differs from the one given",
                              expected=self.expected_md5, actual=digest)

    async def _settle(self, check: Callable[[str], None] | None, *, sync: bool = True) -> str:
        """Wait for the last bytes, check them, make them durable (unless the
        caller's next step does: ``sync`` False); the digest."""
        if self._state != "open":
            raise RuntimeError("chunk already finished")
        # From here the body is complete: a client hanging up now no longer
        # discards the chunk (abort() from the handler is a no-op).
        self._state = "finishing"
        try:
            await self._drain()
            if self._error is not None:
                raise self._error
            digest = self._digest = self._md5.hexdigest()
            if check is not None:
                check(digest)
            if sync:
                await self.writer.sync()
        except BaseException:
            self._state = "aborted"
            await self.writer.abort()
            raise
        return digest

    async def finish_partial(self) -> tuple[int, str]:
        """The body stopped short of the chunk's end on purpose (a tus PATCH
        ends mid-chunk): wait for the queued bytes and return (bytes, their
        MD5) without checking the size. The writer then belongs to the
        caller, whose ``save_tail`` makes the bytes durable where the tail
        lives (a synced copy, or the object store): a flush of them here
        would be a second one."""
        digest = await self._settle(None, sync=False)
        self._state = "finished"
        return self.received, digest

    async def commit(self, forget: Forget | None = None) -> None:
        """Put the chunk in place; ``forget`` clears its record should the
        backend have to rewrite stored bytes (see ChunkWriter.commit)."""
        if self._state != "verified" or self._digest is None:
            raise RuntimeError(f"cannot commit a chunk that is {self._state}")
        try:
            await self.writer.commit(self._digest, forget)
        except BaseException:
            self._state = "aborted"
            await self.writer.abort()
            raise
        self._state = "finished"

    async def revert(self) -> None:
        """Take the committed chunk out of place (its record failed)."""
        if self._state == "finished":
            self._state = "aborted"
            await self.writer.revert()

    async def abort(self) -> None:
        """Drop the chunk (client gone, refused, shutdown). Idempotent; does
        nothing once the body is being checked or the chunk is in place."""
        if self._state == "verified":
            self._state = "aborted"
            await self.writer.abort()
            return
        if self._state != "open":
            return
        self._state = "aborted"
        self._queue, self._queued_bytes = [], 0
        await self._drain()
        await self.writer.abort()
