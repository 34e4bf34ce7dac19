"""The one table of API errors (ARCHITECTURE.md section 2).

Every layer below the handlers raises :class:`UploadError` with a code from
:data:`ERRORS`; the handlers turn it into ``{"error": {...}}`` with the status
from the same table, so a code can never be answered with two statuses.
"""

from __future__ import annotations

from typing import Any

ERRORS: dict[str, int] = {
    "invalid_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "size_mismatch": 400,
    "too_large": 413,
    "checksum_mismatch": 422,
    "incomplete": 409,
    "conflict": 409,
    "method_not_allowed": 405,
    "range_not_satisfiable": 416,
    "rate_limited": 429,
    "insufficient_storage": 507,
    "unavailable": 503,
    "internal": 500,
}

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
    416: "range_not_satisfiable",
    429: "rate_limited",
    503: "unavailable",
    507: "insufficient_storage",
}


class UploadError(Exception):
    """An expected failure with a code from :data:`ERRORS` and JSON details."""

    def __init__(self, code: str, message: str, *, retry_after: int | None = None,
                 **details: Any) -> None:
        if code not in ERRORS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        # Seconds a client should wait before retrying (503, 429): sent as a
        # Retry-After header, not in the body.
        self.retry_after = retry_after
        # Extra response headers the answer needs (Content-Range on a 416).
        self.headers: dict[str, str] = {}

    @property
    def status(self) -> int:
        return ERRORS[self.code]

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


class Unavailable(UploadError):
    """A dependency (database, Redis, object store) cannot be reached right now."""

    def __init__(self, message: str, retry_after: int = 2) -> None:
        super().__init__("unavailable", message, retry_after=retry_after)


def not_found(upload_id: str | None = None) -> UploadError:
    return UploadError("not_found", "no such upload" if upload_id else "not found")
