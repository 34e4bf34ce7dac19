"""The JSON calls of an upload's life: init, status, complete, delete, list."""

from __future__ import annotations

from .. import __version__
from ..metadata import filters_from_query
from ..paging import parse_limit
from . import requests
from .base import BaseHandler


class InitHandler(BaseHandler):
    async def prepare(self) -> None:
        await super().prepare()
        if self.request.method == "POST":
            await self.limit_rate()

    async def post(self) -> None:
        req = requests.init_request(self.body())
        upload = await self.service.create(self.owner, filename=req.filename, size=req.size,
                                           chunk_size=req.chunk_size, md5=req.md5,
                                           metadata=req.metadata,
                                           headers=self.request.headers)
        self.set_header("Location", f"/upload/{upload.upload_id}/status")
        self.send_json(self.service.to_json(upload), 201)


class StatusHandler(BaseHandler):
    async def get(self, upload_id: str) -> None:
        upload = await self.service.status(self.owner, upload_id)
        self.send_json(self.service.to_json(upload))


class CompleteHandler(BaseHandler):
    async def post(self, upload_id: str) -> None:
        upload, finished = await self.service.complete(
            self.owner, upload_id, requests.optional_md5_body(self.body()))
        self.send_json(self.service.to_json(upload), 200 if finished else 202)


class UploadHandler(BaseHandler):
    async def delete(self, upload_id: str) -> None:
        await self.service.delete(self.owner, upload_id)
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()


class ListHandler(BaseHandler):
    async def get(self) -> None:
        # ?status=in_progress,merging (or the parameter repeated): any of them.
        statuses = [status for value in self.get_query_arguments("status")
                    for status in value.split(",") if status]
        page = await self.service.list(
            self.owner, statuses=statuses, filename=self.single_query_argument("filename"),
            metadata=filters_from_query(self.request.query_arguments),
            limit=parse_limit(self.single_query_argument("limit", strip=False)),
            cursor=self.single_query_argument("cursor", strip=False))
        doc: dict[str, object] = {"uploads": [self.service.to_json(u) for u in page.uploads]}
        if page.next_cursor is not None:
            doc["next_cursor"] = page.next_cursor
        self.send_json(doc)


class HealthHandler(BaseHandler):
    async def prepare(self) -> None:
        pass  # liveness needs no identity

    async def get(self) -> None:
        self.send_json({"status": "ok", "version": __version__})
