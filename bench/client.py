"""A lean HTTP/1.1 load client on raw asyncio sockets.

The client shares the machine's two cores with the server, so it must cost
little: request bodies go from a pre-generated file straight to the socket with
``sendfile`` (no bytes through Python), responses are parsed minimally, and
connections are kept alive.
"""

from __future__ import annotations

import asyncio
import json
from typing import IO, Any


class HttpError(Exception):
    pass


class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> "Conn":
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port,
                                                                 limit=1 << 20)
        return self

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None

    async def request(self, method: str, path: str, body: bytes = b"", *,
                      file: IO[bytes] | None = None, offset: int = 0,
                      count: int = 0, headers: dict[str, str] | None = None
                      ) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        length = count if file is not None else len(body)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{extra}"
                f"Content-Length: {length}\r\n\r\n").encode()
        if file is not None:
            self.writer.write(head)
            await self.writer.drain()
            # Zero-copy body: the kernel moves page-cache pages to the socket.
            await asyncio.get_running_loop().sendfile(self.writer.transport, file, offset, count)
        else:
            self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        size = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                size = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(size) if size else b""
        if close:
            await self.close()
        return status, data

    async def json(self, method: str, path: str, doc: Any = None, *, expect: int | tuple = 200,
                   **kw: Any) -> Any:
        body = json.dumps(doc).encode() if doc is not None else b""
        status, data = await self.request(method, path, body, **kw)
        wanted = expect if isinstance(expect, tuple) else (expect,)
        if status not in wanted:
            raise HttpError(f"{method} {path} -> {status} {data[:300]!r}")
        return json.loads(data) if data else None
