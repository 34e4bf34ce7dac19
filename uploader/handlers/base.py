"""What every handler shares: the owner of the request and JSON errors."""

from __future__ import annotations

import json
import logging
from typing import Any

import tornado.web
from tornado import httputil

from ..auth import LOCAL_OWNER
from ..cors import ALLOW_HEADERS, EXPOSE_HEADERS, cors_headers
from ..errors import STATUS_TO_CODE, UploadError
from ..logs import log_request
from . import framing, requests
from .context import HandlerContext

log = logging.getLogger("uploader.http")
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")


# Streaming for every handler, so prepare() (authentication, rate limits)
# runs when the headers arrive, before any body byte is read; small JSON
# bodies are then collected in data_received (bounded by max_json_body).
@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    ctx: HandlerContext
    owner: str
    error_code: str | None = None  # the error-table code answered, for logs and metrics
    answered = False
    # What a cross-origin caller may send and read (the tus routes add theirs).
    cors_allow_headers = ALLOW_HEADERS
    cors_expose_headers = EXPOSE_HEADERS
    # The body is JSON, at most server.max_json_body (chunk PUTs set their own limit).
    json_request = True
    # Announced body length (framing.declared_length): None when chunked.
    body_length: int | None = 0
    body_too_large = False  # a chunked JSON body passed max_json_body
    # How an answer given before the body was sent (framing.py); None after it.
    early: "framing.EarlyAnswer | None" = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        base = tornado.web.RequestHandler
        if cls.get is not base.get and cls.head is base.head:
            # RFC 9110 9.1: HEAD wherever GET is (monitors and load balancers
            # probe with it). Tornado sends the headers of a HEAD answer,
            # Content-Length included, and drops its body.
            cls.head = cls.get

    @property
    def draining_body(self) -> bool:
        """Answered before the body, which is being read into nothing."""
        return self.early == "drain"

    def initialize(self, ctx: HandlerContext) -> None:
        self.ctx = ctx
        self.service = ctx.service
        # In flight until answered or abandoned: shutdown waits for these.
        ctx.drain.enter(self)

    def on_finish(self) -> None:
        self.answered = True
        self.ctx.drain.leave(self)

    def on_connection_close(self) -> None:
        # The client is gone. A handler whose coroutine still runs on to
        # finish() leaves in on_finish (and logs its status there); the others
        # (a streamed body cut short) never answer: log and leave now. An
        # answer given before the body is finished by framing.finish_after_body.
        if not self.answered and not self.draining_body and not self.finishes_after_close():
            log_request(self, aborted=True)
            self.ctx.drain.leave(self)
        super().on_connection_close()

    def finishes_after_close(self) -> bool:
        """Whether the handler still reaches finish() after the client hung
        up: only once its whole body arrived, since Tornado runs the HTTP
        method (which answers) after that and drops a cut request silently.
        Tornado has no public flag for it; its own on_connection_close reads
        the same future. Handlers with their own notion may override."""
        body = getattr(self.request, "_body_future", None)
        return body is not None and body.done() and not body.cancelled() \
            and body.exception() is None

    def access_fields(self) -> dict[str, Any]:
        """Fields of this request's access line (see logs.log_request).
        Never headers or the query string: they may carry credentials."""
        fields: dict[str, Any] = {"owner": getattr(self, "owner", None)}
        path_args = getattr(self, "path_args", None)  # set once _execute runs
        if path_args:
            fields["upload"] = path_args[0]
        if self.error_code:
            fields["error"] = self.error_code
        return fields

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        if hasattr(self, "ctx"):  # not yet during __init__; again on errors
            self.set_cors_headers()

    def set_cors_headers(self, preflight: bool = False) -> None:
        headers = cors_headers(self.ctx.config.cors, self.request.headers.get("Origin"),
                               preflight=preflight, methods=self.allowed_methods(),
                               allow_headers=self.cors_allow_headers,
                               expose_headers=self.cors_expose_headers)
        for name, value in headers.items():
            self.set_header(name, value)

    def allowed_methods(self) -> list[str]:
        base = tornado.web.RequestHandler
        return [m for m in _METHODS if getattr(type(self), m.lower()) is not getattr(base, m.lower())]

    def allow_header(self) -> str:
        return ", ".join(self.allowed_methods() + ["OPTIONS"])

    async def prepare(self) -> None:
        self.owner = LOCAL_OWNER
        self.set_cors_headers()
        self.body_length = framing.declared_length(self.request.headers)
        if self.request.method == "OPTIONS":
            return  # a CORS preflight carries no credentials by design
        self.owner = self.authenticate()
        if self.json_request:
            self._limit_json_body()

    def authenticate(self) -> str:
        """The owner of this request: the bearer token's (401 without a valid one)."""
        return self.ctx.authenticator.owner_for(self.request.headers.get("Authorization"))

    def _limit_json_body(self) -> None:
        limit = self.ctx.config.server.max_json_body
        if self.body_length is None:
            # Chunked: counted in data_received, refused in json_body(); up to
            # the drain bound it is read to its end, so the answer arrives.
            self.request.connection.set_max_body_size(  # type: ignore[union-attr]
                max(limit, self.ctx.config.limits.chunk_size_max))
        elif self.body_length > limit:
            raise self.too_large_body()

    def too_large_body(self) -> UploadError:
        limit = self.ctx.config.server.max_json_body
        return UploadError("too_large", f"the JSON body is larger than {limit} bytes",
                           max_json_body=limit)

    def single_query_argument(self, name: str, *, strip: bool = True) -> str | None:
        """A query parameter given at most once. ``?index=0&index=1`` names
        two chunks: which one a proxy, a log or the server reads would be
        anyone's guess, so it is refused rather than guessed (400)."""
        values = self.get_query_arguments(name, strip=strip)
        if len(values) > 1:
            raise UploadError("invalid_request", f"{name} is given more than once")
        return values[0] if values else None

    async def limit_rate(self) -> None:
        """The owner's and the client address's token buckets (init, chunks)."""
        await self.ctx.ratelimiter.check(self.owner, self.request.remote_ip or "")

    def data_received(self, chunk: bytes) -> None:
        if self.draining_body or self.body_too_large:
            return  # answered already, or refused once the body is in: dropped
        if len(self.request.body) + len(chunk) > self.ctx.config.server.max_json_body:
            self.body_too_large = True
            self.request.body = b""
            return
        # A Content-Length body was checked against max_json_body in prepare.
        self.request.body += chunk

    async def options(self, *args: str) -> None:
        """CORS preflight (and plain OPTIONS): the route's methods; the CORS
        headers were set in prepare() if the origin is allowed."""
        self.set_cors_headers(preflight=True)
        self.set_header("Allow", self.allow_header())
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()

    def body(self) -> bytes:
        """The JSON request body as received; a chunked one that passed
        server.max_json_body is refused here (413), once it has been read."""
        if self.body_too_large:
            raise self.too_large_body()
        return self.request.body

    def json_body(self, *, optional: bool = False) -> Any:
        return requests.parse_json(self.body(), optional=optional)

    def send_json(self, doc: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(doc, separators=(",", ":")))

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        """Tornado's send_error, unless the answer comes before the body: then
        framing.py decides whether the body is drained or the connection closed."""
        self.early = None if self._headers_written else framing.early_answer(
            self.request, shutting_down=self.ctx.drain.draining,
            # No legitimate body is larger than the largest chunk.
            drain_limit=self.ctx.config.limits.chunk_size_max)
        if self.early is None:
            super().send_error(status_code, **kwargs)
            return
        try:
            self.write_error(status_code, **kwargs)
        except Exception:
            log.exception("uncaught exception in write_error")
            if not self._finished:
                self.finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, UploadError):
            error = exc
        elif isinstance(exc, tornado.web.HTTPError):
            code = STATUS_TO_CODE.get(exc.status_code, "internal")
            error = UploadError(code, httputil.responses.get(exc.status_code, "error").lower())
        else:
            error = UploadError("internal", "internal server error")
        self.error_code = error.code
        self.clear()
        self.set_default_headers()
        self.set_status(error.status)
        if error.retry_after is not None:
            self.set_header("Retry-After", str(error.retry_after))
        for name, value in error.headers.items():
            self.set_header(name, value)
        if error.code == "method_not_allowed":
            self.set_header("Allow", self.allow_header())  # RFC 9110 15.5.6
        if self.early == "close":
            # Tornado closes a connection it answers before the body; RFC 9112
            # section 9.6: say so.
            self.set_header("Connection", "close")
        content_type, body = self.error_body(error)
        self.set_header("Content-Type", content_type)
        payload = body.encode()
        if self.draining_body:
            # Complete now (a client reading early has it all); the request
            # finishes once its body has been read into nothing.
            self.set_header("Content-Length", str(len(payload)))
            self.write(payload)
            self.flush()
            framing.finish_after_body(self)
            return
        self.finish(payload)

    def error_body(self, error: UploadError) -> tuple[str, str]:
        """(Content-Type, body) of an error answer: the error table's JSON."""
        return "application/json; charset=utf-8", json.dumps(error.to_json(),
                                                             separators=(",", ":"))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # Expected refusals are answers, not server faults: no tracebacks.
        # Debug only: the access line already carries the status and code.
        if isinstance(value, UploadError) and value.code != "internal":
            log.debug("%s %s -> %s %s", self.request.method, self.request.path,
                     value.status, value.code)
            return
        # Not Tornado's default: it logs the full URI (query strings may
        # carry tokens) and the request object. Path and method only.
        if isinstance(value, tornado.web.HTTPError):
            log.warning("%s %s -> %s", self.request.method, self.request.path, value)
            return
        log.error("uncaught exception in %s %s", self.request.method, self.request.path,
                  exc_info=(typ, value, tb))


class NotFoundHandler(BaseHandler):
    """Every unknown path answers the JSON 404 of the error table."""

    async def prepare(self) -> None:
        raise UploadError("not_found", "no such resource")
