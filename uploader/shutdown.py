"""Requests in flight and cleanup tasks of one process: what a graceful stop
(``graceful.py``) waits for, and the flag that turns new requests away."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine

log = logging.getLogger("uploader.shutdown")


class Drain:
    """Requests in flight and cleanup tasks of one process.

    Handlers ``enter`` when created and ``leave`` when answered or abandoned
    (BaseHandler does both); ``spawn`` keeps background cleanup (a cut chunk's
    abort) where ``Runtime.stop`` can wait for it.
    """

    def __init__(self) -> None:
        self.draining = False
        self._active: set[object] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._forced = asyncio.Event()

    @property
    def active(self) -> int:
        return len(self._active)

    def enter(self, handler: object) -> None:
        self._active.add(handler)
        self._idle.clear()

    def leave(self, handler: object) -> None:
        """Idempotent: a handler may reach both on_connection_close and on_finish."""
        self._active.discard(handler)
        if not self._active:
            self._idle.set()

    def start(self) -> None:
        self.draining = True

    def force(self) -> None:
        """Stop waiting for in-flight requests (a second signal)."""
        self._forced.set()

    @property
    def forced(self) -> bool:
        return self._forced.is_set()

    async def wait_idle(self, timeout: float) -> bool:
        """True when every request answered in time; False on timeout or force."""
        idle = asyncio.ensure_future(self._idle.wait())
        forced = asyncio.ensure_future(self._forced.wait())
        try:
            await asyncio.wait({idle, forced}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            forced.cancel()
        return self._idle.is_set()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> "asyncio.Task[Any]":
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: "asyncio.Task[Any]") -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("cleanup task failed", exc_info=task.exception())

    async def wait_tasks(self) -> None:
        # A task may spawn another (rare): loop until none is left.
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
