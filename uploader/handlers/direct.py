"""Presigned URLs to PUT chunks straight to object storage (direct mode,
docs/s3.md).

``POST /upload/{id}/urls`` with ``{"parts": [{"index", "md5"?}, ...]}`` (at
most ``MAX_PART_URLS``) answers ``{"parts": [signed part, ...]}``;
``POST /upload/{id}/chunk/{index}/url`` with ``{"md5"?}`` answers one signed
part. A signed part is ``{"index", "size", "url", "method": "PUT", "headers",
"expires_in"}``: the client sends exactly ``headers`` (with an MD5 the URL is
signed with the chunk's Content-MD5, so the store refuses other bytes) and
asks again once ``expires_in`` seconds have passed. Which chunks arrived is
read back from the store by ``status`` and ``complete``, never taken from
the client.
"""

from __future__ import annotations

from ..direct_uploads import MAX_PART_URLS
from . import requests
from .base import BaseHandler


class _PartUrlBase(BaseHandler):
    async def prepare(self) -> None:
        await super().prepare()
        if self.request.method == "POST":
            # In direct mode these stand in for the chunk PUTs: the same budget.
            await self.limit_rate()


class PartUrlsHandler(_PartUrlBase):
    async def post(self, upload_id: str) -> None:
        parts = requests.part_list(self.body(), MAX_PART_URLS)
        signed = await self.service.presign_parts(self.owner, upload_id, parts)
        self.ctx.metrics.part_urls.inc(len(signed))
        self.send_json({"parts": signed})


class PartUrlHandler(_PartUrlBase):
    async def post(self, upload_id: str, index: str) -> None:
        md5 = requests.optional_md5_body(self.body())
        [signed] = await self.service.presign_parts(self.owner, upload_id,
                                                    [(requests.index_value(index), md5)])
        self.ctx.metrics.part_urls.inc()
        self.send_json(signed)
