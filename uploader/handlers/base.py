"""What every handler shares: the owner of the request and JSON errors."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import tornado.web
from tornado import httputil

from ..errors import ERRORS, STATUS_TO_CODE, UploadError

if TYPE_CHECKING:
    from ..app import Runtime

log = logging.getLogger("uploader.http")
LOCAL_OWNER = "local"


class BaseHandler(tornado.web.RequestHandler):
    runtime: "Runtime"
    owner: str

    def initialize(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self.service = runtime.service

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    async def prepare(self) -> None:
        self.owner = LOCAL_OWNER

    def json_body(self, *, optional: bool = False) -> Any:
        body = self.request.body
        if not body.strip():
            if optional:
                return None
            raise UploadError("invalid_request", "a JSON body is required")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise UploadError("invalid_request", "body is not valid JSON") from None

    def send_json(self, doc: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(doc, separators=(",", ":")))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, UploadError):
            error = exc
        elif isinstance(exc, tornado.web.HTTPError):
            code = STATUS_TO_CODE.get(exc.status_code, "internal")
            error = UploadError(code, httputil.responses.get(exc.status_code, "error").lower())
        else:
            error = UploadError("internal", "internal server error")
        self.clear()
        self.set_default_headers()
        self.set_status(ERRORS[error.code])
        if error.retry_after is not None:
            self.set_header("Retry-After", str(error.retry_after))
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.finish(json.dumps(error.to_json(), separators=(",", ":")))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # Expected refusals are answers, not server faults: no tracebacks.
        if isinstance(value, UploadError) and value.code != "internal":
            log.info("%s %s -> %s %s", self.request.method, self.request.path,
                     value.status, value.code)
            return
        super().log_exception(typ, value, tb)


class NotFoundHandler(BaseHandler):
    """Every unknown path answers the JSON 404 of the error table."""

    async def prepare(self) -> None:
        raise UploadError("not_found", "no such resource")
