"""GET /files/{id}: the completed file, whole or one byte range; and
GET /upload/{id}/link: a signed link to it that needs no bearer token.

Only completed uploads are served, from their published file, so a partial
file can never be downloaded. A request carrying ``?expires=&signature=`` (a
signed link, links.py) is let in by its signature instead of a token.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from ..errors import UploadError
from ..models import Upload
from ..parsing import parse_ascii_int
from . import requests
from .base import BaseHandler

_RANGE_RE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.ASCII)
_PAST_ANY_END = 1 << 63


def _position(digits: str) -> int:
    try:
        return parse_ascii_int(digits)
    except ValueError:  # more digits than any file has bytes: past its end
        return _PAST_ANY_END


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range as [start, end), None for the whole file.
    Several ranges are answered with the whole file, as RFC 9110 allows."""
    if not header:
        return None
    m = _RANGE_RE.fullmatch(header.strip())
    if not m:
        return None  # RFC 9110 14.2: a Range we cannot read is ignored
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = _position(last)
        if n == 0:
            raise UploadError("range_not_satisfiable", "empty suffix range", size=size)
        if size == 0:
            # RFC 9110 14.1.1 calls it satisfiable, yet no Content-Range can
            # name zero bytes ("bytes 0--1/0"): the whole, empty file (14.2
            # lets a server ignore Range).
            return None
        return max(0, size - n), size
    start = _position(first)
    end = min(_position(last) + 1, size) if last else size
    if start >= size or (last and _position(last) < start):
        raise UploadError("range_not_satisfiable", "range outside the file", size=size)
    return start, end


def content_disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


class FileHandler(BaseHandler):
    link: requests.LinkRequest | None = None

    def authenticate(self) -> str:
        if self.request.method in ("GET", "HEAD"):  # downloads only (tus writes need a token)
            self.link = requests.link_request(self.get_query_argument("expires", None),
                                              self.get_query_argument("signature", None))
        if self.link is None:
            return super().authenticate()
        # A signed link stands in for the bearer token (a browser following
        # it sends none); the owner is the upload's, once the link checks out.
        return ""

    async def _open(self, upload_id: str) -> tuple[Upload, int]:
        if self.link is None:
            return await self.service.open_download(self.owner, upload_id)
        upload, size = await self.service.open_link(upload_id, self.link.expires,
                                                    self.link.signature)
        self.owner = upload.owner  # for the access log
        return upload, size

    async def head(self, upload_id: str) -> None:
        await self.get(upload_id, head=True)

    async def get(self, upload_id: str, head: bool = False) -> None:
        upload, size = await self._open(upload_id)
        if not head:
            # Object storage serves the bytes (and any Range) itself.
            url = await self.service.download_url(upload, content_disposition(upload.filename))
            if url:
                self.redirect(url, status=302)
                return
        self.set_header("Accept-Ranges", "bytes")
        # Verified by parts, md5 is a client's unchecked claim: not shown as
        # the validator. The file never changes once completed, so its id is.
        etag = f'"{upload.upload_id}"' if upload.verified else \
            f'"{upload.md5}"' if upload.md5 else None
        range_header = self.request.headers.get("Range")
        if_range = self.request.headers.get("If-Range")
        if if_range is not None and (etag is None or if_range.strip() != etag):
            # RFC 9110 13.1.5: a validator that does not match (strong
            # comparison; a date never matches, no Last-Modified is sent)
            # asks for the whole file, not a piece of another one.
            range_header = None
        try:
            span = parse_range(range_header, size)
        except UploadError as exc:
            exc.headers["Content-Range"] = f"bytes */{size}"
            raise
        start, end = span or (0, size)
        if span is not None:
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Disposition", content_disposition(upload.filename))
        self.set_header("Content-Length", str(end - start))
        if etag:
            self.set_header("ETag", etag)
        if head:
            self.finish()
            return
        async for piece in self.service.read_file(upload, start, end):
            self.write(piece)
            await self.flush()
        self.finish()


class LinkHandler(BaseHandler):
    """``{"url", "expires_in", "expires_at"}``: ``url`` (relative to the
    server, like an upload's ``location``) downloads the completed file
    without the bearer token until ``expires_at``; ``?expires_in=N`` asks
    for a shorter life than ``links.expiry``."""

    async def get(self, upload_id: str) -> None:
        expires_in = requests.optional_seconds(self.get_query_argument("expires_in", None),
                                               "expires_in")
        self.send_json(await self.service.download_link(self.owner, upload_id, expires_in))
