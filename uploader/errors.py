"""The one table of API errors (the error table of the README).

Every layer below the handlers raises :class:`UploadError` with a code from
:data:`ERRORS`; the handlers turn it into ``{"error": {...}}`` with the status
and the ``retryable`` flag from the same table, so a code can never be answered
with two statuses, and clients decide whether to retry from the answer itself
instead of keeping their own list of codes.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class ErrorKind(NamedTuple):
    """One row of the table: the HTTP status, and whether the same request
    may succeed later without change (clients retry those with backoff and
    must not retry the others unchanged)."""

    status: int
    retryable: bool


# Why each flag is what it is. A retryable answer means "the request was right,
# the server could not take it now"; the others mean the request itself (or the
# client's data) must change first, so repeating it would fail forever.
ERRORS: dict[str, ErrorKind] = {
    # Malformed JSON, a parameter out of range: the same bytes fail again.
    "invalid_request": ErrorKind(400, False),
    # A new token is needed first (the page asks for one, then repeats).
    "unauthorized": ErrorKind(401, False),
    # Unknown id or another owner's upload: it will not appear by waiting.
    # The pre-create hook refused this upload: asking again gets the same no.
    "forbidden": ErrorKind(403, False),
    "not_found": ErrorKind(404, False),
    # The body is shorter than the chunk: the client computed the wrong range.
    "size_mismatch": ErrorKind(400, False),
    # Over a configured limit: it stays over the limit.
    "too_large": ErrorKind(413, False),
    # The bytes differ from the MD5 the client computed of its own data: the
    # file changed under the client (or its hashing is wrong). Re-sending the
    # same request repeats the mismatch; the client must re-read and re-hash.
    "checksum_mismatch": ErrorKind(422, False),
    # The answer names the missing chunks: send those, then complete again.
    "incomplete": ErrorKind(409, False),
    # A merge is running or another request changed the upload meanwhile:
    # wait, read the status, try again. (A conflict with an upload in a final
    # state is not retryable: see UploadError.)
    "conflict": ErrorKind(409, True),
    "method_not_allowed": ErrorKind(405, False),
    "range_not_satisfiable": ErrorKind(416, False),
    # Over the request budget: the answer says when (Retry-After).
    "rate_limited": ErrorKind(429, True),
    # Disk or quota full: nothing acknowledged is lost and space may be freed.
    "insufficient_storage": ErrorKind(507, True),
    # Database, Redis or object store away, or the server is draining.
    "unavailable": ErrorKind(503, True),
    # A server fault: often passing (a restart, a lost connection); a client
    # keeps retrying with backoff and reports it if it persists.
    "internal": ErrorKind(500, True),
    # The tus 1.0 protocol's own answers (/files/, docs/tus.md).
    # A PATCH to a concatenated (final) upload: it never takes bytes.
    "final_upload": ErrorKind(403, False),
    # Upload-Offset is not the upload's offset: the same request fails again;
    # ask the offset (HEAD) and send from there.
    "offset_mismatch": ErrorKind(409, False),
    # Tus-Resumable missing or another version: the client must change.
    "version_unsupported": ErrorKind(412, False),
    # A PATCH body without application/offset+octet-stream.
    "unsupported_media_type": ErrorKind(415, False),
    # Another PATCH is writing to the upload: it ends soon (or is cut).
    "locked": ErrorKind(423, True),
    # Upload-Checksum differs from the body: its bytes were dropped; as for
    # checksum_mismatch, the client re-reads its data before sending again.
    "upload_checksum_mismatch": ErrorKind(460, False),
    # The upload is complete: nothing more can be appended.
    "upload_completed": ErrorKind(400, False),
}

# Upload states no waiting can change: a conflict with one is final.
FINAL_STATES = frozenset({"completed", "failed", "aborted"})

# Tornado raises HTTPError with a bare status for its own refusals (unknown
# route, body over max_body_size, ...); these map them back into the table.
STATUS_TO_CODE: dict[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    411: "invalid_request",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    429: "rate_limited",
    503: "unavailable",
    507: "insufficient_storage",
}


class UploadError(Exception):
    """An expected failure with a code from :data:`ERRORS` and JSON details."""

    def __init__(self, code: str, message: str, *, retry_after: int | None = None,
                 retryable: bool | None = None, **details: Any) -> None:
        if code not in ERRORS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        # The table's flag unless the raiser knows better (a conflict with an
        # upload that is completed, failed or aborted never passes by waiting).
        if retryable is None:
            retryable = ERRORS[code].retryable and details.get("status") not in FINAL_STATES
        self.retryable = retryable
        # Seconds a client should wait before retrying (503, 429): sent as a
        # Retry-After header, not in the body.
        self.retry_after = retry_after
        # Extra response headers the answer needs (Content-Range on a 416).
        self.headers: dict[str, str] = {}

    @property
    def status(self) -> int:
        return ERRORS[self.code].status

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message,
                          "retryable": self.retryable, **self.details}}


def with_retryable(error: dict[str, Any]) -> dict[str, Any]:
    """A stored error object (an upload's failed merge, recorded before the
    flag existed or by a caller that built the dict itself) completed with
    its code's flag, so every error object on the wire carries one."""
    if "retryable" in error:
        return error
    kind = ERRORS.get(str(error.get("code")))
    return {**error, "retryable": bool(kind and kind.retryable)}


class Unavailable(UploadError):
    """A dependency (database, Redis, object store) cannot be reached right now."""

    def __init__(self, message: str, retry_after: int = 2) -> None:
        super().__init__("unavailable", message, retry_after=retry_after)


def not_found(upload_id: str | None = None) -> UploadError:
    return UploadError("not_found", "no such upload" if upload_id else "not found")
