"""The shape of requests: JSON fields, query parameters and headers, parsed
into typed values before the service sees them. Refusals here are
``invalid_request`` (400) with the field named; ranges that depend on the
configuration (sizes, chunk counts) are the service's rules."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from .. import parsing
from ..errors import UploadError
from ..metadata import check_metadata

MD5_RE = re.compile(r"\A[0-9a-f]{32}\Z")
MAX_INDEX_DIGITS = 9  # limits.max_chunks is far below a billion
MAX_FILENAME_CHARS = 4096


def parse_json(body: bytes, *, optional: bool = False) -> Any:
    """Strict JSON (parsing.parse_json: UTF-8, unique keys, bounded numbers
    and nesting); malformed of any shape is 400."""
    if not body.strip():
        if optional:
            return None
        raise UploadError("invalid_request", "a JSON body is required")
    try:
        return parsing.parse_json(body)
    except ValueError as exc:
        raise UploadError("invalid_request", str(exc)) from None


def json_object(body: bytes, *, optional: bool = False) -> dict[str, Any]:
    doc = parse_json(body, optional=optional)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UploadError("invalid_request", "body must be a JSON object")
    return doc


def md5_value(value: Any, field: str = "md5") -> str | None:
    """An optional MD5 as 32 hex characters (either case), lowercased."""
    if value is None:
        return None
    if not isinstance(value, str) or not MD5_RE.match(value.lower()):
        raise UploadError("invalid_request", f"{field} must be 32 hexadecimal characters")
    return value.lower()


def int_field(body: dict[str, Any], name: str, *, required: bool) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise UploadError("invalid_request", f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UploadError("invalid_request", f"{name} must be an integer")
    return value


@dataclass(frozen=True)
class InitRequest:
    filename: str
    size: int
    chunk_size: int | None
    md5: str | None
    metadata: dict[str, str]


def init_request(body: bytes) -> InitRequest:
    doc = json_object(body)
    filename = doc.get("filename")
    if not isinstance(filename, str) or not filename.strip():
        raise UploadError("invalid_request", "filename must be a non-empty string")
    if len(filename) > MAX_FILENAME_CHARS:
        raise UploadError("invalid_request", "filename is too long")
    size = int_field(doc, "size", required=True)
    assert size is not None
    return InitRequest(filename=filename, size=size,
                       chunk_size=int_field(doc, "chunk_size", required=False),
                       md5=md5_value(doc.get("md5")),
                       metadata=check_metadata(doc.get("metadata")))


def optional_md5_body(body: bytes) -> str | None:
    """``{"md5"?}`` or no body at all (complete, presigned part URLs)."""
    return md5_value(json_object(body, optional=True).get("md5"))


def content_md5(value: str) -> str:
    """A ``Content-MD5`` header (base64 of 16 bytes) as hex."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise UploadError("invalid_request", "Content-MD5 must be 16 bytes in base64")
    return raw.hex()


@dataclass(frozen=True)
class ChunkRequest:
    index: int
    md5: str | None
    content_length: int | None


def index_value(raw: str | None) -> int:
    """A chunk index: ASCII digits only (``index=%EF%BC%91``, a fullwidth 1,
    is no index), no sign or spaces."""
    try:
        return parsing.parse_ascii_int(raw or "", max_digits=MAX_INDEX_DIGITS)
    except ValueError:
        raise UploadError("invalid_request", "index must be a non-negative integer") from None


def chunk_request(index: str | None, md5: str | None, header_md5: str | None,
                  content_length: int | None) -> ChunkRequest:
    """``?index=N[&md5=HEX]`` with an optional ``Content-MD5`` header, which
    must agree with ``md5`` when both come. ``content_length``: as
    framing.declared_length read it (None when chunked)."""
    index_number = index_value(index)
    digest = md5_value(md5)
    if header_md5 is not None:
        from_header = content_md5(header_md5)
        if digest is not None and digest != from_header:
            raise UploadError("invalid_request", "md5 and Content-MD5 disagree")
        digest = from_header
    return ChunkRequest(index=index_number, md5=digest, content_length=content_length)
