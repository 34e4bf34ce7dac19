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

import json
import logging
from collections import Counter
from typing import Any

import tornado.httpserver
from tornado import iostream

from .config import Config
from .errors import UploadError

log = logging.getLogger("uploader.http")

_REFUSAL_BODY = json.dumps(
    UploadError("rate_limited", "too many open connections from this address").to_json(),
    separators=(",", ":")).encode()
_REFUSAL = (b"HTTP/1.1 429 Too Many Requests\r\n"
            b"Content-Type: application/json; charset=utf-8\r\n"
            b"Retry-After: 1\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY)


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    def initialize(self, *args: Any, max_per_address: int = 0, header_timeout: float | None = None,
                   **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.max_per_address = max_per_address
        self.open_per_address: Counter[str] = Counter()
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

    @staticmethod
    def _refuse(stream: iostream.IOStream) -> None:
        try:
            stream.write(_REFUSAL).add_done_callback(lambda _: stream.close())
        except iostream.StreamClosedError:
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
    )
