"""/files/ and /files/{id}: tus 1.0 and the IETF resumable-upload draft.

Thin: headers are parsed by ``tus.protocol``, the rules live in
``tus.service`` (docs/tus.md). Bodies stream exactly like chunk PUTs (the
same idle watchdog and deadline, from ChunkHandler), into a TusAppender
instead of a single chunk. ``GET /files/{id}``, and a ``HEAD`` without tus
headers, stay the download of the completed file.
"""

from __future__ import annotations

import json
from typing import Any

from ..cors import ALLOW_HEADERS, EXPOSE_HEADERS
from ..errors import UploadError
from ..models import COMPLETED, MERGING, Upload
from ..tus import protocol as tp
from ..tus.appender import TusAppender
from ..tus.service import TusService
from .base import BaseHandler
from .chunk import ChunkHandler
from .files import FileHandler


class TusMixin(ChunkHandler):
    receiver: TusAppender | None = None  # type: ignore[assignment]
    cors_allow_headers = tp.cors_allow_headers(ALLOW_HEADERS)
    cors_expose_headers = tp.cors_expose_headers(EXPOSE_HEADERS)
    methods: tuple[str, ...] = ()

    @property
    def tus(self) -> TusService:
        return self.ctx.tus

    @property
    def draft(self) -> str | None:
        return tp.draft_version(self.request.headers)

    def allowed_methods(self) -> list[str]:
        return list(self.methods)

    def set_default_headers(self) -> None:
        super().set_default_headers()
        if self.draft:
            self.set_header("Upload-Draft-Interop-Version", self.draft)
        else:
            self.set_header("Tus-Resumable", tp.TUS_VERSION)

    def error_body(self, error: UploadError) -> tuple[str, str]:
        if self.draft:
            return "application/problem+json", json.dumps(tp.problem(error))
        return super().error_body(error)

    async def options(self, *args: str) -> None:
        """Discovery (and the CORS preflight)."""
        self.set_header("Tus-Version", tp.TUS_VERSION)
        self.set_header("Tus-Extension", ",".join(self.tus.extensions))
        self.set_header("Tus-Max-Size", str(self.tus.max_size))
        self.set_header("Tus-Checksum-Algorithm", ",".join(self.tus.checksum_algorithms))
        self.set_header("Upload-Limit", self._limits())
        await super().options(*args)

    def _limits(self) -> str:
        return f"min-size=0,max-size={self.tus.max_size}"

    def _content_length(self) -> int | None:
        return tp.non_negative(self.request.headers, "Content-Length")

    def _stream_body(self, appender: TusAppender, content_length: int | None) -> None:
        """Body limits as for a chunk PUT: this body's size (or what the
        upload has left), its deadline and the idle watchdog."""
        upload = appender.upload
        left = (upload.size if upload.size_known else self.tus.max_size) - appender.start_offset
        length = content_length if content_length is not None else left
        self._connection.set_max_body_size(max(length, 1))
        self._guard_slow_body(max(length, 1))

    def _upload_headers(self, upload: Upload, offset: int) -> None:
        self.set_header("Upload-Offset", str(offset))
        expires = self.tus.expires_at(upload)
        if expires is not None:
            self.set_header("Upload-Expires", tp.http_date(expires))
        if self.draft:
            done = upload.status in (COMPLETED, MERGING)
            self.set_header("Upload-Complete", "?1" if done else "?0")
            self.set_header("Upload-Limit", self._limits())

    def _no_content(self, status: int = 204) -> None:
        self.set_status(status)
        self.finish()


class TusCollectionHandler(TusMixin):
    """``POST /files/``: creation (with upload, deferred length, concatenation)."""

    methods = ("POST",)
    created: Upload | None = None
    complete = False

    async def prepare(self) -> None:
        await BaseHandler.prepare(self)
        if self.request.method == "OPTIONS":
            return
        if self.request.method != "POST":
            raise UploadError("method_not_allowed", "use POST to create an upload")
        headers = self.request.headers
        tp.check_version(headers)
        await self.limit_rate()
        concat, parts = tp.parse_concat(headers.get("Upload-Concat"))
        metadata = tp.parse_metadata(headers.get("Upload-Metadata"))
        checksum = tp.parse_checksum(headers.get("Upload-Checksum"))
        length = tp.non_negative(headers, "Upload-Length")
        content_length = self._content_length()
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        if self.draft:
            self.complete = bool(tp.boolean(headers, "Upload-Complete"))
            if self.complete and content_length is not None:
                if length is not None and length != content_length:
                    raise UploadError("invalid_request", "Upload-Length and Content-Length "
                                      "differ", problem="length_mismatch")
                length = content_length
            if "filename" not in metadata:
                name = _disposition_filename(headers.get("Content-Disposition"))
                if name:
                    metadata["filename"] = name
            has_body = bool(content_length) or chunked
        else:
            defer = headers.get("Upload-Defer-Length")
            if defer is not None and defer.strip() != "1":
                raise UploadError("invalid_request", "Upload-Defer-Length must be 1")
            if concat != "final" and (length is None) == (defer is None):
                raise UploadError("invalid_request", "give Upload-Length or "
                                  "Upload-Defer-Length: 1")
            has_body = headers.get("Content-Type") == tp.OFFSET_TYPE and (
                bool(content_length) or chunked)
        if has_body and concat == "final":
            raise UploadError("invalid_request", "a final upload takes no body")
        self.created = upload = await self.tus.create(self.owner, length=length,
                                                      metadata=metadata, concat=concat,
                                                      parts=parts)
        self.path_args = [upload.upload_id]  # access lines name the upload
        if has_body:
            self.receiver = await self.tus.start_append(
                self.owner, upload.upload_id, offset=0, content_length=content_length,
                checksum=checksum)
            if self.receiver is not None:
                if self.client_gone:
                    self._discard()
                    return
                self._stream_body(self.receiver, content_length)

    async def post(self, *args: str) -> None:
        upload = self.created
        assert upload is not None
        offset = self.tus.offset_of(upload)
        if self.receiver is not None:
            self._cancel_idle_timer()
            upload, offset = await self.tus.finish_append(self.owner, self.receiver,
                                                          complete=self.complete)
        elif (upload.size_known and upload.size == 0 and upload.status != COMPLETED
              and not (upload.tus and upload.tus.concat)):
            upload, _ = await self.service.complete(self.owner, upload.upload_id, None)
        self.set_header("Location", f"{self.request.protocol}://{self.request.host}"
                                    f"/files/{upload.upload_id}")
        self._upload_headers(upload, offset)
        self._no_content(201)


class TusResourceHandler(TusMixin, FileHandler):
    """``/files/{id}``: HEAD (offset), PATCH (append), DELETE (termination);
    GET and a plain HEAD download the completed file."""

    methods = ("GET", "HEAD", "PATCH", "DELETE")
    complete = False

    async def prepare(self) -> None:
        await BaseHandler.prepare(self)
        method = self.request.method
        override = self.request.headers.get("X-HTTP-Method-Override", "").upper()
        if method == "POST" and override in ("PATCH", "DELETE"):
            self.request.method = method = override  # tus asks servers to honour it
        if method == "OPTIONS" or method == "GET" or (
                method == "HEAD" and not tp.is_tus(self.request.headers)):
            return
        if method not in ("HEAD", "PATCH", "DELETE"):
            raise UploadError("method_not_allowed", "use HEAD, PATCH or DELETE")
        tp.check_version(self.request.headers)
        if method == "PATCH":
            await self._prepare_patch()

    async def _prepare_patch(self) -> None:
        await self.limit_rate()
        headers = self.request.headers
        content_type = headers.get("Content-Type", "").split(";")[0].strip()
        if self.draft is None and content_type != tp.OFFSET_TYPE:
            raise UploadError("unsupported_media_type",
                              f"PATCH bodies are {tp.OFFSET_TYPE}")
        if self.draft == "6" and content_type not in ("", tp.PARTIAL_UPLOAD_TYPE):
            raise UploadError("unsupported_media_type",
                              f"PATCH bodies are {tp.PARTIAL_UPLOAD_TYPE}")
        offset = tp.non_negative(headers, "Upload-Offset")
        if offset is None:
            raise UploadError("invalid_request", "Upload-Offset is required")
        if self.draft:
            complete = tp.boolean(headers, "Upload-Complete")
            if complete is None:
                raise UploadError("invalid_request", "Upload-Complete is required")
            self.complete = complete
        content_length = self._content_length()
        self.receiver = await self.tus.start_append(
            self.owner, self.path_args[0], offset=offset, content_length=content_length,
            declare=tp.non_negative(headers, "Upload-Length"),
            checksum=tp.parse_checksum(headers.get("Upload-Checksum")))
        if self.receiver is not None:
            if self.client_gone:
                self._discard()
                return
            self._stream_body(self.receiver, content_length)

    async def patch(self, upload_id: str) -> None:
        if self.receiver is None:  # nothing to write: an idempotent retry
            upload = await self.tus.get(self.owner, upload_id)
            offset = self.tus.offset_of(upload)
        else:
            self._cancel_idle_timer()
            upload, offset = await self.tus.finish_append(self.owner, self.receiver,
                                                          complete=self.complete)
        self._upload_headers(upload, offset)
        self._no_content()

    async def head(self, upload_id: str) -> None:
        if not tp.is_tus(self.request.headers):
            await FileHandler.head(self, upload_id)
            return
        upload = await self.tus.get(self.owner, upload_id)
        self.set_header("Cache-Control", "no-store")
        self._upload_headers(upload, self.tus.offset_of(upload))
        if upload.size_known:
            self.set_header("Upload-Length", str(upload.size))
        if self.draft:
            self._no_content()
            return
        if not upload.size_known:
            self.set_header("Upload-Defer-Length", "1")
        state = upload.tus
        if state is not None and state.metadata:
            self.set_header("Upload-Metadata", tp.encode_metadata(state.metadata))
        if state is not None and state.concat == "partial":
            self.set_header("Upload-Concat", "partial")
        elif state is not None and state.concat == "final":
            base = f"{self.request.protocol}://{self.request.host}/files/"
            self.set_header("Upload-Concat", "final;" + " ".join(base + p for p in state.parts))
        self.set_header("Content-Length", "0")
        self._no_content(200)

    async def delete(self, upload_id: str) -> None:
        await self.tus.terminate(self.owner, upload_id)
        self._no_content()

    def access_fields(self) -> dict[str, Any]:
        fields = super().access_fields()
        fields.pop("index", None)  # a PATCH spans chunks: bytes is what it moved
        return fields


def _disposition_filename(header: str | None) -> str | None:
    """``filename`` of a Content-Disposition (the draft's way to name a file)."""
    if not header:
        return None
    from email.message import Message
    message = Message()
    message["Content-Disposition"] = header
    name = message.get_filename()
    return name if isinstance(name, str) else None
