"""Pages of ``GET /uploads``: the limit's bounds and the opaque cursor.

A cursor names the last upload of a page by its sort key (created_at,
upload_id); the next page is the rows strictly after it in that descending
order (a keyset, not an offset). Rows inserted or deleted meanwhile never
shift it: of the rows that exist throughout, none is skipped or repeated.

On the wire a cursor is base64url (no padding) of a small versioned JSON
document. It is opaque to clients: anything this server did not produce, or
could not have, is refused as ``invalid_request``, never guessed at.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime

from . import parsing
from .errors import UploadError
from .models import Upload
from .naming import is_upload_id

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
CURSOR_VERSION = 1
MAX_CURSOR_CHARS = 200  # a version-1 cursor is ~100 characters
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
_TS_RE = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}\Z")
_B64URL_RE = re.compile(r"\A[A-Za-z0-9_-]+\Z")


@dataclass(frozen=True)
class Page:
    uploads: list[Upload]
    next_cursor: str | None  # None: this was the last page


def parse_limit(text: str | None) -> int:
    """``limit`` of the query: 1..MAX_LIMIT, ASCII digits; absent: the default."""
    if text is None:
        return DEFAULT_LIMIT
    try:
        value = parsing.parse_ascii_int(text, max_digits=7)
    except ValueError:
        value = 0
    return check_limit(value)


def check_limit(value: int) -> int:
    """``value`` if it is a page size this server gives (1..MAX_LIMIT)."""
    if not 1 <= value <= MAX_LIMIT:
        raise UploadError("invalid_request", f"limit must be an integer from 1 to {MAX_LIMIT}",
                          max_limit=MAX_LIMIT)
    return value


def encode_cursor(upload: Upload) -> str:
    doc = {"v": CURSOR_VERSION, "c": upload.created_at.strftime(_TS_FORMAT),
           "i": upload.upload_id}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> tuple[datetime, str]:
    """(created_at, upload_id) of the row a cursor names."""
    try:
        if not 0 < len(text) <= MAX_CURSOR_CHARS or not _B64URL_RE.match(text):
            raise ValueError("not base64url")
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        doc = parsing.parse_json(raw)
        if not isinstance(doc, dict) or set(doc) != {"v", "c", "i"}:
            raise ValueError("not a cursor document")
        if doc["v"] != CURSOR_VERSION or isinstance(doc["v"], bool):
            raise ValueError("unknown cursor version")
        created, upload_id = doc["c"], doc["i"]
        if not isinstance(created, str) or not _TS_RE.match(created):
            raise ValueError("bad timestamp")
        if not isinstance(upload_id, str) or not is_upload_id(upload_id):
            raise ValueError("bad upload id")
        return datetime.strptime(created, _TS_FORMAT), upload_id
    except (ValueError, binascii.Error):
        raise UploadError("invalid_request", "cursor is not one this server gave: pass "
                          "next_cursor from a previous answer unchanged") from None


def sort_key(upload: Upload) -> tuple[datetime, str]:
    return upload.created_at, upload.upload_id


def page_of(found: list[Upload], limit: int) -> Page:
    """The page from up to ``limit + 1`` rows in order: one more than the
    page says another page follows."""
    if len(found) <= limit:
        return Page(found, None)
    uploads = found[:limit]
    return Page(uploads, encode_cursor(uploads[-1]))
