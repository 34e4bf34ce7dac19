"""The merge queue across instances (``merge.queue: redis``).

``complete`` does not merge where it lands: it puts a job on a Redis Stream
(``<locks.redis_prefix>merges`` on ``locks.redis_url``) read by one consumer group, and waits for the outcome in
the database. Any instance (``merge.workers: embedded``) or dedicated
``uploader worker`` processes (``external``) take jobs with XREADGROUP and run
the same merge saga (``merging.Merges``): the upload's lock and the
``merge_version`` fence keep one merge per upload however many jobs name it.

- A job is acknowledged (XACK, then XDEL: the stream holds only open jobs)
  once its merge has an outcome, completed or refused. A worker that dies
  leaves its job pending; after ``locks.ttl`` without a heartbeat any worker
  takes it over (XAUTOCLAIM) and merges again, fencing the dead one out.
- A live worker's job stays its own: while the merge runs it renews its claim
  (XCLAIM ... JUSTID resets the idle time) every third of the TTL.
- Progress is visible from every instance: the worker writes the bytes merged
  so far to ``<stream>:progress:<id>`` (a key with a TTL); ``submit`` writes 0
  there, so an upload waiting in the queue reads as ``merging`` too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import Any, Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from .errors import Unavailable, UploadError
from .models import Upload

log = logging.getLogger("uploader.merge")
GROUP = "mergers"
TICK = 0.5  # seconds between progress writes of a running job
QUEUED_TTL = 24 * 3600  # seconds a "queued" mark outlives a job nobody takes
READ_BLOCK_MS = 1000  # XREADGROUP waits this long for a job before looking again
Runner = Callable[[str, "str | None"], Awaitable[Upload]]


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RedisMergeQueue:
    def __init__(self, url: str, stream: str, ttl: float, *, concurrency: int) -> None:
        self.stream = stream
        self.ttl = ttl
        self.concurrency = concurrency
        self.consumer = consumer_name()
        self.client = aioredis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self._jobs: dict[str, asyncio.Task[None]] = {}  # stream entry id -> its run
        self._loops: list[asyncio.Task[None]] = []
        self._accepting = False
        self._group_ready = False
        self._free = asyncio.Event()
        self.reclaim_rounds = 0  # looks for dead workers' jobs so far

    @property
    def busy(self) -> int:
        """Jobs this process is running now."""
        return len(self._jobs)

    def _progress_key(self, upload_id: str) -> str:
        return f"{self.stream}:progress:{upload_id}"

    # -- the side that completes -----------------------------------------------

    async def submit(self, upload_id: str, md5: str | None) -> None:
        """Queue a merge of ``upload_id`` and mark it queued (progress 0)."""
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xadd(self.stream, {"upload_id": upload_id, "md5": md5 or ""})
                pipe.set(self._progress_key(upload_id), 0, ex=QUEUED_TTL)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise Unavailable("merge queue unavailable") from exc

    async def progress(self, upload_id: str) -> int | None:
        """Bytes merged so far by whichever worker runs it; 0 while it
        waits in the queue; None when no job of it is open."""
        try:
            value = await self.client.get(self._progress_key(upload_id))
        except (RedisError, OSError):
            return None  # a status read must not fail for want of a progress figure
        return int(value) if value is not None else None

    async def depth(self) -> int | None:
        """Open jobs (waiting or running), or None when Redis does not answer."""
        try:
            return int(await self.client.xlen(self.stream))
        except (RedisError, OSError):
            return None

    # -- the side that merges --------------------------------------------------

    def start(self, run: Runner, progress: Callable[[str], int | None]) -> None:
        """Take jobs from now on: ``run(upload_id, md5)`` merges one (the
        saga), ``progress(upload_id)`` says how far a running one got."""
        if self._loops:
            return
        self._run, self._local_progress = run, progress
        self._accepting = True
        self._loops = [asyncio.create_task(self._read_loop()),
                       asyncio.create_task(self._reclaim_loop())]
        log.info("merge queue: taking jobs from %s as %s (%d at a time)", self.stream,
                 self.consumer, self.concurrency)

    def stop_taking(self) -> None:
        """No new jobs (shutdown): the running ones go on."""
        self._accepting = False
        for task in self._loops:
            task.cancel()
        self._loops = []

    async def wait(self, timeout: float) -> bool:
        jobs = list(self._jobs.values())
        if jobs and timeout > 0:
            await asyncio.wait(jobs, timeout=timeout)
        return all(job.done() for job in jobs)

    async def close(self) -> None:
        self.stop_taking()
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()  # left pending: another worker takes it after the TTL
        await asyncio.gather(*jobs, return_exceptions=True)
        await self.client.aclose()

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From the stream's start: jobs queued before any worker existed
            # are taken too (finished ones are deleted, so none repeats).
            await self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _slots(self) -> int:
        """Wait until this worker may run another job; how many it may."""
        while len(self._jobs) >= self.concurrency:
            self._free.clear()
            await self._free.wait()
        return self.concurrency - len(self._jobs)

    async def _read_loop(self) -> None:
        pause = TICK
        while self._accepting:
            try:
                await self._ensure_group()
                free = await self._slots()
                answer: Any = await self.client.xreadgroup(GROUP, self.consumer, {self.stream: ">"},
                                                      count=free, block=READ_BLOCK_MS)
                for _, entries in answer or []:
                    for entry_id, fields in entries:
                        self._begin(entry_id, fields)
                pause = TICK
            except (RedisError, OSError) as exc:
                log.warning("merge queue: cannot read jobs (%s); retrying in %.0fs", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)

    async def _reclaim_loop(self) -> None:
        """Jobs of workers that died: idle (no heartbeat) for a lock TTL."""
        while self._accepting:
            await asyncio.sleep(max(self.ttl / 3, TICK))
            try:
                await self._ensure_group()
                free = await self._slots()
                answer: Any = await self.client.xautoclaim(self.stream, GROUP, self.consumer,
                                                      min_idle_time=int(self.ttl * 1000),
                                                      start_id="0-0", count=free)
                for entry_id, fields in answer[1]:
                    if fields:  # None: deleted meanwhile
                        log.warning("merge queue: took over job %s of a dead worker",
                                    _text(entry_id))
                        self._begin(entry_id, fields)
            except (RedisError, OSError) as exc:
                log.warning("merge queue: cannot reclaim jobs: %s", exc)
            self.reclaim_rounds += 1

    def _begin(self, entry_id: bytes | str, fields: dict) -> None:
        key = _text(entry_id)
        if key in self._jobs:
            return  # already ours and running
        upload_id = _text(fields.get(b"upload_id", b""))
        md5 = _text(fields.get(b"md5", b"")) or None
        self._jobs[key] = asyncio.create_task(self._job(key, upload_id, md5))

    async def _job(self, entry_id: str, upload_id: str, md5: str | None) -> None:
        keeper = asyncio.create_task(self._keep(entry_id, upload_id))
        finished = False
        try:
            await self._run(upload_id, md5)
            finished = True
        except Unavailable as exc:
            # The database or Redis went away mid-merge: not an outcome. The
            # job stays pending and is taken again after the TTL.
            log.warning("merge queue: job for %s left for later: %s", upload_id, exc.message)
        except UploadError:
            finished = True  # refused (checksum, missing chunks, aborted...): recorded
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("merge queue: job for %s failed; it is retried after the TTL",
                          upload_id)
        finally:
            keeper.cancel()
            self._jobs.pop(entry_id, None)
            self._free.set()
        if finished:
            await self._ack(entry_id, upload_id)

    async def _ack(self, entry_id: str, upload_id: str) -> None:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xack(self.stream, GROUP, entry_id)
                pipe.xdel(self.stream, entry_id)
                pipe.delete(self._progress_key(upload_id))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # Taken again after the TTL: the merge finds the upload completed.
            log.warning("merge queue: could not acknowledge job %s: %s", entry_id, exc)

    async def _keep(self, entry_id: str, upload_id: str) -> None:
        """While a job runs: publish its progress, and renew its claim so no
        other worker takes it over."""
        renew_every = max(self.ttl / 3, TICK)
        since_renew = 0.0
        last: int | None = None
        while True:
            await asyncio.sleep(TICK)
            since_renew += TICK
            try:
                merged = self._local_progress(upload_id)
                if merged is not None and merged != last:
                    await self.client.set(self._progress_key(upload_id), merged,
                                          ex=max(int(self.ttl * 2), 10))
                    last = merged
                if since_renew >= renew_every:
                    since_renew = 0.0
                    await self.client.xclaim(self.stream, GROUP, self.consumer, 0, [entry_id],
                                             justid=True)
            except (RedisError, OSError) as exc:
                log.warning("merge queue: heartbeat of job %s failed: %s", entry_id, exc)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
