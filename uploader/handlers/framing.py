"""What the headers say about the request body, and answering before it.

Every handler streams its body, so ``prepare()`` (authentication, rate
limits, the upload's state) decides from the headers alone, and many
refusals come before a body byte was read. Tornado then closes the
connection with the body unread, and the kernel resets it: a client that
writes its whole body before reading (Python's http.client, most scripts)
loses the answer to ``ConnectionResetError`` and retries a 404 as if the
network had failed. So an answer given before the body is handled in one of
two ways (RFC 9110 section 10.1.1, RFC 9112 section 9.6):

- ``drain``: the answer is sent at once (complete, with Content-Length, so a
  client reading early has it) and the request is finished only after its
  announced body has been read and thrown away; the connection stays usable.
  Bounded: at most ``limits.chunk_size_max`` bytes (no legitimate body is
  larger) within Tornado's body timeout.
- ``close``: the answer carries ``Connection: close`` and the connection is
  closed after it. For clients that sent ``Expect: 100-continue`` (they wait
  for this answer and send no body: Tornado sends its 100 only when the
  handler has not answered), for bodies longer than the bound or of unknown
  length (chunked), for framing we do not trust, and during shutdown.
"""

from __future__ import annotations

import re
from asyncio import Future
from typing import Literal

from tornado.httputil import HTTPHeaders, HTTPServerRequest
from tornado.web import RequestHandler

from ..errors import UploadError
from ..parsing import parse_ascii_int

EarlyAnswer = Literal["drain", "close"]


def declared_length(headers: HTTPHeaders) -> int | None:
    """The body length the headers announce: 0 without a body, None for a
    chunked one. Framing Tornado would refuse with a bare 400 (or that two
    parsers could read differently) is a JSON 400 here instead."""
    encoding = headers.get("Transfer-Encoding")
    length = headers.get("Content-Length")
    if encoding is not None:
        if length is not None:
            raise UploadError("invalid_request",
                              "Content-Length and Transfer-Encoding must not both be sent")
        if encoding.lower() != "chunked":
            raise UploadError("invalid_request", "only Transfer-Encoding: chunked is supported")
        return None
    if length is None:
        return 0
    # Equal repeated values are one length, as Tornado reads them.
    pieces = re.split(r",[ \t]*", length)
    try:
        if any(piece != pieces[0] for piece in pieces):
            raise ValueError
        return parse_ascii_int(pieces[0])
    except ValueError:
        raise UploadError("invalid_request",
                          "Content-Length must be one number of ASCII digits") from None


def body_pending(request: HTTPServerRequest) -> bool:
    """Whether the request body has not been read yet (an answer now would
    come before it). Tornado keeps no public flag; its own
    RequestHandler.on_connection_close reads the same future."""
    body: Future[None] | None = getattr(request, "_body_future", None)
    return body is not None and not body.done()


def early_answer(request: HTTPServerRequest, *, shutting_down: bool,
                 drain_limit: int) -> EarlyAnswer | None:
    """How to answer now, or None when the body has been read already.
    ``drain_limit``: the most body bytes read and dropped after an answer."""
    if not body_pending(request):
        return None
    headers = request.headers
    if shutting_down or "100-continue" in headers.get("Expect", "").lower():
        return "close"
    try:
        length = declared_length(headers)
    except UploadError:
        return "close"
    if length is None or length > drain_limit:
        return "close"
    return "drain"


def finish_after_body(handler: RequestHandler) -> None:
    """The answer is flushed: read the announced body into nothing (the
    handler's data_received drops it) and finish the request once it is in,
    or once the client leaves."""
    length = declared_length(handler.request.headers) or 0
    # Tornado refuses a body over its limit with a bare 400 written after
    # our answer: the limit becomes exactly the announced length.
    handler.request.connection.set_max_body_size(max(length, 1))  # type: ignore[union-attr]
    body: Future[None] = handler.request._body_future

    def done(_: Future[None]) -> None:
        if not handler._finished:
            handler.finish()

    body.add_done_callback(done)
