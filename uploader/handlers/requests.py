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
from ..links import invalid_link
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


def part_list(body: bytes, limit: int) -> list[tuple[int, str | None]]:
    """``{"parts": [{"index": N, "md5"?: HEX}, ...]}`` (at most ``limit``,
    each index once) as (index, md5) pairs."""
    parts = json_object(body).get("parts")
    if not isinstance(parts, list) or not parts:
        raise UploadError("invalid_request", "parts must be a non-empty list of {index, md5}")
    if len(parts) > limit:
        raise UploadError("invalid_request", f"at most {limit} parts per request",
                          max_parts=limit)
    out: list[tuple[int, str | None]] = []
    seen: set[int] = set()
    for part in parts:
        if not isinstance(part, dict):
            raise UploadError("invalid_request", "each part must be an object {index, md5}")
        index = int_field(part, "index", required=True)
        assert index is not None
        if index < 0 or index in seen:
            raise UploadError("invalid_request", "part indices must be distinct and >= 0",
                              index=index)
        seen.add(index)
        out.append((index, md5_value(part.get("md5"))))
    return out


def optional_seconds(value: str | None, name: str) -> int | None:
    """An optional positive number of seconds from the query string."""
    if value is None:
        return None
    try:
        seconds = parsing.parse_ascii_int(value, max_digits=MAX_INDEX_DIGITS)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise UploadError("invalid_request", f"{name} must be a positive integer")
    return seconds


SIGNATURE_RE = re.compile(r"\A[0-9a-f]{64}\Z")
EXPIRES_RE = re.compile(r"\A[0-9]{1,12}\Z")


@dataclass(frozen=True)
class LinkRequest:
    expires: int
    signature: str


def link_request(expires: str | None, signature: str | None) -> LinkRequest | None:
    """``?expires=UNIX&signature=HEX`` of a signed download link, or None
    when the request carries no signature (then the bearer token counts)."""
    if signature is None:
        return None
    if expires is None or not EXPIRES_RE.match(expires) or not SIGNATURE_RE.match(signature):
        raise invalid_link()
    return LinkRequest(int(expires), signature)
