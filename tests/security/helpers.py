"""What the security tests share: two owners with tokens, a client that sends
one owner's token, and raw requests no well-behaved client would send."""

from __future__ import annotations

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
