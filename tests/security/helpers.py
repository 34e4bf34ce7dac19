"""What the security tests share: two owners with tokens, a client that sends
one owner's token, and raw requests no well-behaved client would send."""

from __future__ import annotations

import asyncio
import functools
import http.client
import socket
from typing import Any

import tornado.tcpclient

from support import Api
from uploader.auth import hash_token

TOKENS = {"alice": "alice-secret-token", "bob": "bob-secret-token"}
AUTH_ON = {"enabled": True, "tokens": {owner: hash_token(t) for owner, t in TOKENS.items()}}


class TokenApi(Api):
    """The shared JSON client, sending one owner's bearer token (or none)."""

    def __init__(self, client: Any, token: str | None) -> None:
        super().__init__(client)
        self.token = token

    async def call(self, method: str, path: str, body: Any = None, *,  # type: ignore[override]
                   raw: bytes | None = None, headers: dict[str, str] | None = None):
        headers = dict(headers or {})
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        return await super().call(method, path, body, raw=raw, headers=headers)


async def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send raw request bytes on a fresh connection; return the status and the
    response head. For requests a well-behaved client library would not send."""
    stream = await tornado.tcpclient.TCPClient().connect("127.0.0.1", port)
    try:
        await stream.write(head.encode("latin-1") + body)
        response = await stream.read_until(b"\r\n\r\n", max_bytes=65536)
    finally:
        stream.close()
    return int(response.split(b" ", 2)[1]), response


BOUND = 30.0  # seconds a blocking exchange may take before the test fails


async def blocking(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking client call on a thread while the test's event loop
    serves the app (http.client and raw sockets block)."""
    return await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(fn, *args, **kwargs))


def http_client_exchange(port: int, method: str, path: str, body: bytes = b"",
                         headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """Python's http.client as most scripts use it: the whole body is
    written before a byte of the answer is read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def read_response(sock: socket.socket, method: str = "GET") -> tuple[int, Any, bytes]:
    """One response from a raw socket, parsed by http.client (which skips
    interim 1xx answers)."""
    resp = http.client.HTTPResponse(sock, method=method)
    resp.begin()
    return resp.status, resp.headers, resp.read()


def raw_exchange(port: int, data: bytes, method: str = "GET") -> tuple[int, Any, bytes]:
    """Send raw request bytes on a fresh connection; the parsed answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock:
        sock.sendall(data)
        return read_response(sock, method)
