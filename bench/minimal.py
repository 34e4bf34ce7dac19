"""The floor of issue 19: a minimal Tornado PUT server that streams each body
to a file at its offset and hashes it with MD5 in a thread, and nothing else
(no checks, no database, no fsync). Its CPU per byte is what receiving
through Tornado and hashing once costs here.

    python -m bench.minimal PORT FOLDER
    PUT /f/<name>?offset=N   (body: the bytes)  -> 200 <md5 hex>
    GET /healthz             -> 200
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import tornado.httpserver
import tornado.web

POOL = ThreadPoolExecutor(4)


@tornado.web.stream_request_body
class Put(tornado.web.RequestHandler):
    def prepare(self) -> None:
        folder = self.settings["folder"]
        name = os.path.basename(self.path_args[0])
        self.fd = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT, 0o600)
        self.offset = int(self.get_query_argument("offset", "0"))
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.job: asyncio.Future[None] | None = None
        self.request.connection.set_max_body_size(1 << 30)

    def _write(self, data: bytes, offset: int) -> None:
        self.md5.update(data)
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    async def data_received(self, chunk: bytes) -> None:
        if self.job is not None:
            await self.job
        loop = asyncio.get_running_loop()
        self.job = loop.run_in_executor(POOL, self._write, chunk, self.offset)
        self.offset += len(chunk)

    async def put(self, _name: str) -> None:
        if self.job is not None:
            await self.job
        os.close(self.fd)
        self.write(self.md5.hexdigest())


class Health(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("ok")


async def main(port: int, folder: str) -> None:
    app = tornado.web.Application([(r"/f/([A-Za-z0-9_.-]+)", Put), (r"/healthz", Health)],
                                  folder=folder)
    server = tornado.httpserver.HTTPServer(app, max_body_size=1 << 30,
                                           max_buffer_size=1 << 30, chunk_size=1 << 20)
    server.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
