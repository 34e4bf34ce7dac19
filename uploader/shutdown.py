"""Graceful shutdown: drain in-flight requests, refuse new ones, then stop.

On SIGTERM/SIGINT (``cli.py``), :func:`graceful_stop`:

1. marks the runtime draining: a request that arrives on an already open
   connection is answered 503 ``unavailable`` with Retry-After (the app routes
   it to ``DrainingHandler``) instead of being half served;
2. stops keep-alive (each answer now closes its connection) and closes the
   listening sockets: new connections are refused, so a load balancer or
   client retries another instance;
3. waits until every request in flight has answered, and background merges
   have finished, at most ``server.shutdown_timeout`` seconds in all (a
   second signal cuts the wait short);
4. closes every connection: a chunk PUT still streaming is cut, its handler's
   ``on_connection_close`` aborts the receiver, which drops the ``.part``
   file; the chunk was never recorded (records are written only after the
   bytes are complete);
5. ``Runtime.stop``: waits for those aborts and the I/O pool, stops the
   timers, closes the pools.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Coroutine

if TYPE_CHECKING:
    import tornado.httpserver

    from .app import Runtime

log = logging.getLogger("uploader.shutdown")
# Closing sockets is immediate; this only bounds a connection whose serving
# loop does not notice (it should never be reached).
CLOSE_CONNECTIONS_TIMEOUT = 5.0


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


async def graceful_stop(server: "tornado.httpserver.HTTPServer", runtime: "Runtime",
                        timeout: float) -> None:
    drain = runtime.drain
    drain.start()
    runtime.expirer.stop()  # no new sweep starts while we drain
    # conn_params is shared by the server's connections and read at each
    # request: from now on every answer closes its connection, so an idle
    # keep-alive client learns at its next request (503) and reconnects.
    server.conn_params.no_keep_alive = True
    server.stop()
    log.info("shutdown: draining %d requests in flight (at most %gs)", drain.active, timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    if not await drain.wait_idle(timeout):
        log.warning("shutdown: cutting %d requests still running; cut chunks are dropped",
                    drain.active)
    # Merges whose complete already answered 202 run on in the background:
    # they get what is left of the same timeout (cancelled ones go back to
    # in_progress and the client's next complete merges again).
    if not drain.forced and not await runtime.service.wait_merges(deadline - loop.time()):
        log.warning("shutdown: cancelling merges still running")
    try:
        await asyncio.wait_for(server.close_all_connections(), CLOSE_CONNECTIONS_TIMEOUT)
    except asyncio.TimeoutError:
        log.warning("shutdown: some connections did not close in time")
    await runtime.stop()
    log.info("shutdown: done")
