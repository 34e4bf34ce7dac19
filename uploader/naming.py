"""Server-generated ids and the sanitized on-disk filename (docs/architecture.md: wire format)."""

from __future__ import annotations

import re
import secrets
import unicodedata

ID_PATTERN = r"[0-9a-f]{32}"
_ID_RE = re.compile(rf"\A{ID_PATTERN}\Z")
MAX_NAME_BYTES = 200


def new_upload_id() -> str:
    return secrets.token_hex(16)


def is_upload_id(value: str) -> bool:
    return bool(_ID_RE.match(value))


def _visible(char: str) -> str:
    """Control characters (C0, DEL, C1) and line or paragraph separators
    become "_"; invisible format characters go: bidi embeddings, overrides
    and isolates (``invoice\u202egpj.exe`` shows as "invoiceexe.jpg"), marks,
    zero-width spaces and joiners, BOMs, soft hyphens. A name must read as
    what it is, in a listing, a log line or a Content-Disposition."""
    category = unicodedata.category(char)
    if category in ("Cc", "Zl", "Zp"):
        return "_"
    return "" if category == "Cf" else char


def sanitize_filename(name: str) -> str:
    """The part after the last separator, no control or invisible formatting
    characters, no leading dots or spaces, at most 200 UTF-8 bytes (cut on a
    character boundary)."""
    # Lone surrogates (legal in JSON strings) cannot be stored as UTF-8.
    name = name.encode("utf-8", "replace").decode("utf-8")
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(map(_visible, name))
    name = name.lstrip(". ")
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        name = encoded[:MAX_NAME_BYTES].decode("utf-8", errors="ignore")
    return name or "file"
