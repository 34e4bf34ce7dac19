"""The wire format of tus 1.0 and the IETF draft: parsing request headers into
typed values and writing answer headers. No I/O, no upload rules."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any, Callable
from urllib.parse import urlsplit

from ..errors import UploadError
from ..naming import is_upload_id

TUS_VERSION = "1.0.0"
# Draft interop versions tus-js-client speaks: 5 is draft -03, 6 drafts -04/-05.
IETF_VERSIONS = ("5", "6")
OFFSET_TYPE = "application/offset+octet-stream"
PARTIAL_UPLOAD_TYPE = "application/partial-upload"
CHECKSUMS: dict[str, Callable[[], Any]] = {
    "md5": lambda: hashlib.md5(usedforsecurity=False),
    "sha1": lambda: hashlib.sha1(usedforsecurity=False),
    "sha256": hashlib.sha256,
}
MAX_METADATA_PAIRS = 64
PROBLEM_BASE = "https://iana.org/assignments/http-problem-types#"
# Error-table codes the draft names a problem type for.
PROBLEM_TYPES = {"offset_mismatch": "mismatching-upload-offset",
                 "upload_completed": "completed-upload",
                 "length_mismatch": "inconsistent-upload-length"}

_REQUEST_HEADERS = ("Tus-Resumable, Upload-Offset, Upload-Length, Upload-Metadata, "
                    "Upload-Defer-Length, Upload-Concat, Upload-Checksum, Upload-Complete, "
                    "Upload-Draft-Interop-Version, X-HTTP-Method-Override, X-Request-ID")
_ANSWER_HEADERS = ("Location, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Defer-Length, "
                   "Upload-Concat, Upload-Expires, Upload-Complete, Upload-Limit, "
                   "Upload-Draft-Interop-Version, Tus-Resumable, Tus-Version, Tus-Extension, "
                   "Tus-Max-Size, Tus-Checksum-Algorithm")


def cors_allow_headers(base: str) -> str:
    return f"{base}, {_REQUEST_HEADERS}"


def cors_expose_headers(base: str) -> str:
    return f"{base}, {_ANSWER_HEADERS}"


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes

    def hasher(self) -> Any:
        return CHECKSUMS[self.algorithm]()


def draft_version(headers: Any) -> str | None:
    """The IETF interop version of a request, None for tus (or nothing)."""
    value = headers.get("Upload-Draft-Interop-Version")
    return value.strip() if value and value.strip() in IETF_VERSIONS else None


def is_tus(headers: Any) -> bool:
    return headers.get("Tus-Resumable") is not None or draft_version(headers) is not None


def check_version(headers: Any) -> None:
    if draft_version(headers) is not None:
        return
    if headers.get("Tus-Resumable") != TUS_VERSION:
        error = UploadError("version_unsupported", "Tus-Resumable: 1.0.0 is required",
                            supported=[TUS_VERSION])
        error.headers["Tus-Version"] = TUS_VERSION
        raise error


def non_negative(headers: Any, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 18:
        raise UploadError("invalid_request", f"{name} must be a non-negative integer")
    return int(value)


def boolean(headers: Any, name: str) -> bool | None:
    """A structured-field Boolean (``?1`` / ``?0``)."""
    value: str | None = headers.get(name)
    if value is None:
        return None
    if value.strip() not in ("?1", "?0"):
        raise UploadError("invalid_request", f"{name} must be ?1 or ?0")
    return value.strip() == "?1"


def parse_metadata(header: str | None) -> dict[str, str]:
    """``key base64value,key2,key3 base64value``: keys without spaces or
    commas, values base64 of UTF-8 text (a key may carry no value)."""
    if not header or not header.strip():
        return {}
    pairs = header.split(",")
    if len(pairs) > MAX_METADATA_PAIRS:
        raise UploadError("invalid_request", "too many Upload-Metadata pairs",
                          max_pairs=MAX_METADATA_PAIRS)
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, _, value = pair.strip().partition(" ")
        if not key or not key.isascii() or key in metadata:
            raise UploadError("invalid_request", "malformed Upload-Metadata")
        try:
            metadata[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise UploadError("invalid_request", "Upload-Metadata values must be base64 of "
                              "UTF-8 text", key=key) from None
    return metadata


def encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" if v else k
                    for k, v in metadata.items())


def parse_checksum(header: str | None) -> Checksum | None:
    if header is None:
        return None
    algorithm, _, value = header.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in CHECKSUMS:
        raise UploadError("invalid_request", "unsupported checksum algorithm",
                          supported=sorted(CHECKSUMS))
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != CHECKSUMS[algorithm]().digest_size:
        raise UploadError("invalid_request", "Upload-Checksum must be the base64 digest")
    return Checksum(algorithm, digest)


def parse_concat(header: str | None) -> tuple[str | None, list[str]]:
    """(None | "partial" | "final", partial upload ids of a final)."""
    if header is None:
        return None, []
    value = header.strip()
    if value == "partial":
        return "partial", []
    kind, _, urls = value.partition(";")
    if kind.strip() != "final" or not urls.strip():
        raise UploadError("invalid_request", "Upload-Concat must be partial or final;<urls>")
    ids = []
    for url in urls.split():
        path = urlsplit(url).path.rstrip("/")
        head, _, upload_id = path.rpartition("/")
        if not head.endswith("/files") or not is_upload_id(upload_id):
            raise UploadError("invalid_request", "Upload-Concat names an unknown upload URL")
        ids.append(upload_id)
    return "final", ids


def http_date(ts: datetime) -> str:
    """RFC 9110 IMF-fixdate of a naive UTC timestamp."""
    return format_datetime(ts.replace(tzinfo=timezone.utc), usegmt=True)


def problem(error: UploadError) -> dict[str, Any]:
    """RFC 9457 problem details of an error, with the draft's own types."""
    kind = PROBLEM_TYPES.get(str(error.details.get("problem") or error.code))
    doc: dict[str, Any] = {"type": PROBLEM_BASE + kind if kind else "about:blank",
                           "title": error.message, "status": error.status,
                           "code": error.code}
    for key, value in error.details.items():
        if key != "problem":
            doc[key.replace("_", "-")] = value
    return doc
