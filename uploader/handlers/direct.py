"""POST /upload/{id}/chunk/{index}/url: a presigned URL to PUT one chunk
straight to object storage (direct mode, docs/s3.md).

Body (optional): ``{"md5": HEX}``; with it the URL is signed with the chunk's
Content-MD5, so the store refuses other bytes. The answer:
``{"index", "size", "url", "method": "PUT", "headers", "expires_in"}``; the
client sends exactly ``headers``. Which chunks arrived is read back from the
store by ``status`` and ``complete``, never taken from the client.
"""

from __future__ import annotations

from . import requests
from .base import BaseHandler


class PartUrlHandler(BaseHandler):
    async def post(self, upload_id: str, index: str) -> None:
        doc = await self.service.presign_chunk(self.owner, upload_id,
                                               requests.index_value(index),
                                               requests.optional_md5_body(self.body()))
        self.send_json(doc)
