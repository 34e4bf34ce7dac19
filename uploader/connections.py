"""The HTTP server with per-address connection caps and header timeouts.

Tornado times out slow bodies (``body_timeout``) and idle keep-alive
connections, but it accepts any number of connections from one address: a
client opening thousands of idle sockets would starve everyone else of file
descriptors. This server counts open connections per peer address and
answers 429 (then closes) past ``connections.max_per_address``.

The count is per TCP peer: behind a reverse proxy every client shares the
proxy's address, so set the cap there (or 0 here).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import Counter
from typing import Any

import tornado.httpserver
from tornado import iostream

from .config import Config
from .errors import UploadError

log = logging.getLogger("uploader.http")
# A refused connection is read into nothing for at most this long (and at
# most the largest chunk a client may send), and only so many at once.
LINGER_SECONDS = 5.0
MAX_LINGERING = 256

_REFUSAL_BODY = json.dumps(
    UploadError("rate_limited", "too many open connections from this address").to_json(),
    separators=(",", ":")).encode()
_REFUSAL = (b"HTTP/1.1 429 Too Many Requests\r\n"
            b"Content-Type: application/json; charset=utf-8\r\n"
            b"Retry-After: 1\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY)


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    def initialize(self, *args: Any, max_per_address: int = 0, header_timeout: float | None = None,
                   linger_bytes: int = 0, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.max_per_address = max_per_address
        self.linger_bytes = linger_bytes
        self.open_per_address: Counter[str] = Counter()
        self._lingering = 0  # refused connections still being read into nothing
        self._address_of: dict[iostream.IOStream, str] = {}
        if header_timeout is not None:
            # Tornado derives its header timeout from idle_connection_timeout;
            # one timer covers both waits, so the shorter one wins.
            current = self.conn_params.header_timeout or header_timeout
            self.conn_params.header_timeout = min(current, header_timeout)

    def handle_stream(self, stream: iostream.IOStream, address: tuple) -> None:
        host = str(address[0]) if isinstance(address, tuple) and address else ""
        if self.max_per_address and self.open_per_address[host] >= self.max_per_address:
            log.info("refusing connection from %s: %d already open", host,
                     self.open_per_address[host])
            self._refuse(stream)
            return
        # Keyed by stream: on_close gets the connection object, which holds it.
        self._address_of[stream] = host
        self.open_per_address[host] += 1
        super().handle_stream(stream, address)

    def _refuse(self, stream: iostream.IOStream) -> None:
        if self._lingering >= MAX_LINGERING:
            # A flood: answer and close at once rather than hold more sockets.
            try:
                stream.write(_REFUSAL).add_done_callback(lambda _: stream.close())
            except iostream.StreamClosedError:
                stream.close()
            return
        self._lingering += 1
        task = asyncio.ensure_future(self._answer_and_linger(stream, self.linger_bytes))
        task.add_done_callback(lambda _: self._count_down())

    def _count_down(self) -> None:
        self._lingering -= 1

    @staticmethod
    async def _answer_and_linger(stream: iostream.IOStream, limit: int) -> None:
        """The 429, then a lingering close (RFC 9112 9.6): closing with the
        client's request unread makes the kernel send a reset, which
        destroys the answer in the client's receive buffer, and a client
        that writes its whole body first (http.client, our own client)
        sees a broken pipe instead of the 429. So: half-close, read what it
        still sends into nothing (bounded), then close."""
        try:
            await stream.write(_REFUSAL)
            stream.socket.shutdown(socket.SHUT_WR)
            read = 0
            deadline = asyncio.get_running_loop().time() + LINGER_SECONDS
            while read < limit:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                piece = await asyncio.wait_for(stream.read_bytes(1 << 16, partial=True), left)
                read += len(piece)
        except (iostream.StreamClosedError, OSError, asyncio.TimeoutError):
            pass  # the client is done (or gone): nothing left to protect
        finally:
            stream.close()

    def on_close(self, server_conn: object) -> None:
        host = self._address_of.pop(getattr(server_conn, "stream", None), None)  # type: ignore[arg-type]
        if host is not None:
            self.open_per_address[host] -= 1
            if self.open_per_address[host] <= 0:
                del self.open_per_address[host]
        super().on_close(server_conn)


def make_guarded_server(app: Any, config: Config) -> GuardedHTTPServer:
    server, conn = config.server, config.connections
    return GuardedHTTPServer(
        app,
        xheaders=server.xheaders,
        max_body_size=server.max_json_body,
        chunk_size=server.read_chunk_size,
        idle_connection_timeout=server.idle_connection_timeout,
        body_timeout=conn.body_timeout,
        decompress_request=False,
        max_per_address=conn.max_per_address,
        header_timeout=conn.header_timeout,
        linger_bytes=config.limits.chunk_size_max,
    )
