"""Activity marks: a chunk starting or still streaming keeps its upload alive.

The expiry sweep removes an upload idle for ``expiry.ttl`` and claims it with
a conditional change on ``updated_at`` (``store.claim_expired``). A chunk
counts as activity from its first byte, not only once recorded: its start
bumps ``updated_at``, and while its body streams one task per process bumps
it again every ``interval`` for every upload with a chunk in flight here. The
mark lives in the database, so every instance's sweep sees it. Writes are
thinned out: an upload marked within ``interval / 2`` is not marked again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict
from datetime import timedelta
from typing import Iterable, Protocol

from .models import utcnow
from .store.base import MetadataStore

log = logging.getLogger("uploader.activity")

MAX_INTERVAL = 60.0  # seconds between marks of a streaming chunk, at most
REMEMBERED = 10_000  # uploads whose last mark a process remembers


class Streaming(Protocol):
    """A chunk body being received (receiver.ChunkReceiver)."""
    upload_id: str

    @property
    def settled(self) -> bool:
        ...


class ActivityMarks:
    def __init__(self, store: MetadataStore, ttl: float) -> None:
        self.store = store
        # A quarter of the TTL: an in-flight chunk's mark is never older
        # than half of it, whatever the clock skew of a sweep's decision.
        self.interval = min(ttl / 4, MAX_INTERVAL)
        self._marked: OrderedDict[str, float] = OrderedDict()  # id -> monotonic
        self._streaming: weakref.WeakSet[Streaming] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None

    async def mark(self, upload_ids: Iterable[str]) -> None:
        """``updated_at`` = now for those not marked within interval / 2."""
        now = time.monotonic()
        due = [i for i in dict.fromkeys(upload_ids)
               if now - self._marked.get(i, -self.interval) >= self.interval / 2]
        if not due:
            return
        at = utcnow()
        await self.store.touch(due, at, at - timedelta(seconds=self.interval / 2))
        self._remember(due, now)

    def marked_now(self, upload_id: str) -> None:
        """The row's ``updated_at`` was just set to now by a change made here
        (its init): a mark like any other, so its first chunk writes none."""
        self._remember((upload_id,), time.monotonic())

    def _remember(self, upload_ids: Iterable[str], at: float) -> None:
        for upload_id in upload_ids:
            self._marked[upload_id] = at
            self._marked.move_to_end(upload_id)
        while len(self._marked) > REMEMBERED:
            self._marked.popitem(last=False)

    def streaming(self, receiver: Streaming) -> None:
        """Keep ``receiver``'s upload marked until it settles (finished or
        aborted); a receiver dropped without settling is forgotten with it."""
        self._streaming.add(receiver)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            ids = [r.upload_id for r in list(self._streaming) if not r.settled]
            if not ids:
                return  # started again by the next chunk
            try:
                await self.mark(ids)
            except Exception:
                log.warning("could not mark %d streaming uploads as active", len(ids),
                            exc_info=True)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
