"""PUT /upload/{id}/chunk?index=N[&md5=HEX]: one chunk, streamed to disk.

Everything refusable is refused in prepare(), before a body byte is read;
the body then flows piece by piece into the chunk's own .part file through a
ChunkReceiver. Exactly one of on_finish / on_connection_close runs after
prepare(): both make sure an unfinished chunk is discarded.
"""

from __future__ import annotations

import asyncio
import time
import typing
from typing import Any

import tornado.ioloop
import tornado.web
from tornado.http1connection import HTTP1Connection

from ..errors import UploadError
from ..receiver import ChunkReceiver
from . import requests
from .base import BaseHandler, log


@tornado.web.stream_request_body
class ChunkHandler(BaseHandler):
    json_request = False  # raw bytes, limited per request to this chunk's size
    receiver: ChunkReceiver | None = None
    client_gone = False
    _idle_timer: object | None = None
    _last_data: float = 0.0  # monotonic time of the last body bytes
    # Set while Tornado waits for our own disk (receiver back-pressure): a
    # slow disk must not count as an idle client.
    _disk_wait: "asyncio.Future[object] | None" = None

    async def prepare(self) -> None:
        await super().prepare()
        if self.request.method == "OPTIONS":
            return  # CORS preflight, answered by BaseHandler.options
        if self.request.method != "PUT":
            raise UploadError("method_not_allowed", "use PUT for chunks")
        await self.limit_rate()
        req = requests.chunk_request(self.get_query_argument("index", None, strip=False),
                                     self.get_query_argument("md5", None),
                                     self.request.headers.get("Content-MD5"),
                                     self.body_length)
        self.receiver = await self.service.start_chunk(
            self.owner, self.path_args[0], req.index, req.md5, req.content_length)
        if self.client_gone:
            # Hung up (or cut by shutdown) while start_chunk ran: Tornado
            # will not read a body nor call us again; drop the new .part now.
            self._discard()
            return
        # A chunked-encoded body longer than the chunk is cut off by Tornado.
        self._connection.set_max_body_size(self.receiver.expected_size)
        self._guard_slow_body(self.receiver.expected_size)

    def _guard_slow_body(self, length: int) -> None:
        """A deadline for the whole body (Tornado closes the connection when
        it passes) and our own idle watchdog: Tornado's body_timeout alone
        would let a client hold a 64 MiB chunk's slot for its full deadline
        while sending nothing."""
        conn = self.ctx.config.connections
        self._connection.set_body_timeout(length / conn.min_chunk_rate + conn.chunk_idle_timeout)
        self._last_data = time.monotonic()
        self._arm_idle_timer(conn.chunk_idle_timeout)

    def _arm_idle_timer(self, delay: float) -> None:
        loop = tornado.ioloop.IOLoop.current()
        self._idle_timer = loop.call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        self._idle_timer = None
        receiver = self.receiver
        if receiver is None or receiver.done or self._finished:
            return
        limit = self.ctx.config.connections.chunk_idle_timeout
        if self._disk_wait is not None and not self._disk_wait.done():
            self._arm_idle_timer(limit)
            return
        idle = time.monotonic() - self._last_data
        if idle < limit:
            self._arm_idle_timer(limit - idle)
            return
        # Closing the stream runs on_connection_close, which discards the
        # partial chunk; the upload's status and other chunks are untouched.
        log.info("closing idle chunk upload %s index %d after %.1fs without data",
                 self.path_args[0], receiver.index, idle)
        self._connection.stream.close()

    @property
    def _connection(self) -> HTTP1Connection:
        # Always HTTP/1 here: the server is a tornado HTTPServer.
        return typing.cast(HTTP1Connection, self.request.connection)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            tornado.ioloop.IOLoop.current().remove_timeout(self._idle_timer)
            self._idle_timer = None

    def data_received(self, chunk: bytes):  # type: ignore[no-untyped-def]
        if self.receiver is None:
            return None  # a body on an OPTIONS request: ignored
        self._last_data = time.monotonic()
        wait = self.receiver.feed(chunk)
        if wait is not None:
            self._disk_wait = wait
            wait.add_done_callback(self._disk_caught_up)
        return wait

    def _disk_caught_up(self, _: object) -> None:
        self._disk_wait = None
        self._last_data = time.monotonic()  # the client's idle time starts now

    async def put(self, upload_id: str) -> None:
        assert self.receiver is not None
        self._cancel_idle_timer()  # the body is complete
        self.send_json(await self.service.finish_chunk(self.receiver))

    def _discard(self) -> None:
        self._cancel_idle_timer()
        receiver = self.receiver
        if receiver is not None and not receiver.done:
            # Tracked, so shutdown waits for the .part file to be gone.
            self.ctx.drain.spawn(receiver.abort())

    def finishes_after_close(self) -> bool:
        # Once finish() started (whole body read) put() runs on and answers;
        # before that a cut body means no answer ever comes.
        return self.receiver is not None and self.receiver.done

    def access_fields(self) -> dict[str, Any]:
        fields = super().access_fields()
        if self.receiver is not None:
            fields["index"] = self.receiver.index
            fields["bytes"] = self.receiver.received
        return fields

    def on_connection_close(self) -> None:
        self.client_gone = True
        super().on_connection_close()  # decides from receiver.done: before _discard
        self._discard()

    def on_finish(self) -> None:
        self._discard()
        super().on_finish()
