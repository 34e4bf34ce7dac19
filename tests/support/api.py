"""JSON clients for the API: :class:`Api` on the test's event loop (the
in-process app of tests/conftest.py) and :class:`BlockingApi` for a server
in another process (a :class:`~support.server.ServerProcess`). Both never
raise on an HTTP error status and share method names and return shapes."""

from __future__ import annotations

import hashlib
import http.client
import json
from dataclasses import dataclass
from email.message import Message
from typing import Any

import tornado.httpclient

from .data import KiB
from .wait import wait_until


class Api:
    """A thin JSON client over the in-process test server (pytest-tornasync's
    ``http_server_client``)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @property
    def port(self) -> int:
        return self.client.get_http_port()

    async def call(self, method: str, path: str, body: Any = None, *,
                   raw: bytes | None = None, headers: dict[str, str] | None = None
                   ) -> tornado.httpclient.HTTPResponse:
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
        if raw is None and method in ("POST", "PUT"):
            raw = b""
        return await self.client.fetch(path, method=method, body=raw, headers=headers,
                                       raise_error=False, request_timeout=120,
                                       allow_nonstandard_methods=True)

    async def json(self, method: str, path: str, body: Any = None, **kw: Any
                   ) -> tuple[int, Any]:
        resp = await self.call(method, path, body, **kw)
        doc = json.loads(resp.body) if resp.body else None
        return resp.code, doc

    async def init(self, size: int, chunk_size: int = 64 * KiB, filename: str = "f.bin",
                   **extra: Any) -> dict[str, Any]:
        code, doc = await self.json("POST", "/upload/init",
                                    {"filename": filename, "size": size,
                                     "chunk_size": chunk_size, **extra})
        assert code == 201, doc
        return doc

    async def put_chunk(self, upload_id: str, index: int, data: bytes,
                        md5_hex: str | None = None) -> tuple[int, Any]:
        query = f"index={index}" + (f"&md5={md5_hex}" if md5_hex else "")
        return await self.json("PUT", f"/upload/{upload_id}/chunk?{query}", raw=data)

    async def status(self, upload_id: str) -> dict[str, Any]:
        code, doc = await self.json("GET", f"/upload/{upload_id}/status")
        assert code == 200, doc
        return doc

    async def complete(self, upload_id: str, md5_hex: str | None = None) -> tuple[int, Any]:
        body = {"md5": md5_hex} if md5_hex else None
        return await self.json("POST", f"/upload/{upload_id}/complete", body)


@dataclass
class Response:
    """What :meth:`BlockingApi.call` returns: the status, the headers (names
    case-insensitive, as in Tornado's response) and the whole body."""

    code: int
    headers: Message
    body: bytes


class BlockingApi:
    """The blocking twin of :class:`Api` for a server at 127.0.0.1:``port``:
    a fresh connection per call, so a call never meets a connection the
    server closed (a restart, a drain)."""

    port: int

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None, timeout: float = 120.0) -> Response:
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
        if raw is None and method in ("POST", "PUT"):
            raw = b""
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=raw, headers=headers or {})
            resp = conn.getresponse()
            return Response(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        resp = self.call(method, path, body, **kw)
        return resp.code, json.loads(resp.body) if resp.body else None

    def init(self, size: int, chunk_size: int = 64 * KiB, filename: str = "f.bin",
             **extra: Any) -> dict[str, Any]:
        code, doc = self.json("POST", "/upload/init", {"filename": filename, "size": size,
                                                       "chunk_size": chunk_size, **extra})
        assert code == 201, doc
        return doc

    def put_chunk(self, upload_id: str, index: int, data: bytes,
                  md5_hex: str | None = None, **kw: Any) -> tuple[int, Any]:
        query = f"index={index}" + (f"&md5={md5_hex}" if md5_hex else "")
        return self.json("PUT", f"/upload/{upload_id}/chunk?{query}", raw=data, **kw)

    def status(self, upload_id: str) -> dict[str, Any]:
        code, doc = self.json("GET", f"/upload/{upload_id}/status")
        assert code == 200, doc
        return doc

    def complete(self, upload_id: str, md5_hex: str | None = None,
                 **kw: Any) -> tuple[int, Any]:
        body = {"md5": md5_hex} if md5_hex else None
        return self.json("POST", f"/upload/{upload_id}/complete", body, **kw)

    def wait_status(self, upload_id: str, wanted: str, timeout: float = 60.0
                    ) -> dict[str, Any]:
        """Poll ``status`` until the upload is ``wanted``; its upload object."""
        return wait_until(lambda: (doc := self.status(upload_id))["status"] == wanted and doc,
                          f"{upload_id} to be {wanted} on port {self.port}", timeout,
                          interval=0.05)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the server's /metrics (0 for a series that never moved)."""
        from prometheus_client.parser import text_string_to_metric_families
        resp = self.call("GET", "/metrics")
        assert resp.code == 200, resp.body[:200]
        for family in text_string_to_metric_families(resp.body.decode()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0

    def download_md5(self, path: str) -> str:
        """The MD5 of what ``GET path`` streams (a download, e.g. ``/files/<id>``)."""
        conn = self.connection(timeout=120)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            digest = hashlib.md5()
            while piece := resp.read(1 << 20):
                digest.update(piece)
            return digest.hexdigest()
        finally:
            conn.close()
