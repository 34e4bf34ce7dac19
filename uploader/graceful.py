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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tornado.httpserver

    from .runtime import Runtime

log = logging.getLogger("uploader.shutdown")
# Closing sockets is immediate; this only bounds a connection whose serving
# loop does not notice (it should never be reached).
CLOSE_CONNECTIONS_TIMEOUT = 5.0


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
    if not drain.forced and not await runtime.merges.wait(deadline - loop.time()):
        log.warning("shutdown: cancelling merges still running")
    try:
        await asyncio.wait_for(server.close_all_connections(), CLOSE_CONNECTIONS_TIMEOUT)
    except asyncio.TimeoutError:
        log.warning("shutdown: some connections did not close in time")
    await runtime.stop()
    log.info("shutdown: done")
