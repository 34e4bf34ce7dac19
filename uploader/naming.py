"""Server-generated ids and the sanitized on-disk filename (docs/architecture.md: wire format)."""

from __future__ import annotations

import re
import secrets

ID_PATTERN = r"[0-9a-f]{32}"
_ID_RE = re.compile(rf"\A{ID_PATTERN}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME_BYTES = 200


def new_upload_id() -> str:
    return secrets.token_hex(16)


def is_upload_id(value: str) -> bool:
    return bool(_ID_RE.match(value))


def sanitize_filename(name: str) -> str:
    """The part after the last separator, no control characters, no leading
    dots or spaces, at most 200 UTF-8 bytes (cut on a character boundary)."""
    # Lone surrogates (legal in JSON strings) cannot be stored as UTF-8.
    name = name.encode("utf-8", "replace").decode("utf-8")
    name = re.split(r"[/\\]", name)[-1]
    name = _CONTROL.sub("_", name)
    name = name.lstrip(". ")
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        name = encoded[:MAX_NAME_BYTES].decode("utf-8", errors="ignore")
    return name or "file"
