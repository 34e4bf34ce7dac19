"""A real HTTP receiver for webhook and hook tests: a Tornado server on its
own port in the test's loop, answering from a script and recording every
request."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
import tornado.web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """``answers`` is consumed one per request: an int status, a
    (status, json) pair, "hang" (no answer until ``release`` is set), or a
    callable of the request giving one of those; when empty, ``default``."""

    answers: list[Any] = field(default_factory=list)
    default: Any = 200
    received: list[Received] = field(default_factory=list)
    hanging: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    server: tornado.httpserver.HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(tornado.web.RequestHandler):
            async def post(self, *_: str) -> None:
                request = Received(self.request.path,
                                   {k.lower(): v for k, v in self.request.headers.items()},
                                   self.request.body)
                receiver.received.append(request)
                answer = receiver.answers.pop(0) if receiver.answers else receiver.default
                if callable(answer):
                    answer = answer(request)
                if answer == "hang":
                    receiver.hanging += 1
                    try:
                        await receiver.release.wait()
                    finally:
                        receiver.hanging -= 1
                    answer = 200
                status, doc = answer if isinstance(answer, tuple) else (answer, None)
                self.set_status(status)
                if doc is not None:
                    self.set_header("Content-Type", "application/json")
                    self.finish(json.dumps(doc))

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.server = tornado.httpserver.HTTPServer(
            tornado.web.Application([(r"/(.*)", Handler)]))
        self.server.add_sockets([sock])
        return self

    async def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()

