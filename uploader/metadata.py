"""Upload metadata: a small map of string keys to string values, given at
init (or by tus's ``Upload-Metadata``, or set by the pre-create hook), kept
with the upload, shown in the upload object and carried by every event.

The bounds keep one upload's metadata small enough to travel in every event
and to be indexed for ``GET /uploads?metadata.<key>=<value>``. Keys follow
tus's rule for ``Upload-Metadata`` keys (printable ASCII, no space, no
comma), so anything a tus client sends fits.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from .errors import UploadError

MAX_KEYS = 32
MAX_KEY_BYTES = 64
MAX_VALUE_BYTES = 2048
MAX_TOTAL_BYTES = 8192  # keys and values, UTF-8
MAX_FILTERS = 8  # metadata.<key>=<value> filters in one GET /uploads
KEY_RE = re.compile(r"\A[!-+\--~]+\Z")  # 0x21-0x7e except ","

# Query parameters of GET /uploads that filter on metadata.
FILTER_PREFIX = "metadata."


def _refuse(message: str, **bound: Any) -> UploadError:
    return UploadError("invalid_request", message, **bound)


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise _refuse("metadata keys must be printable ASCII without spaces or commas")
    if len(key) > MAX_KEY_BYTES:
        raise _refuse("metadata key is too long", max_key_bytes=MAX_KEY_BYTES)
    return key


def check_metadata(value: Any) -> dict[str, str]:
    """The validated metadata of a request (None: empty); 400
    ``invalid_request`` naming the bound that was crossed."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _refuse("metadata must be an object of string values")
    if len(value) > MAX_KEYS:
        raise _refuse("too many metadata keys", max_keys=MAX_KEYS)
    total = 0
    result: dict[str, str] = {}
    for key, item in value.items():
        check_key(key)
        if not isinstance(item, str):
            raise _refuse("metadata values must be strings", key=key)
        if "\x00" in item:
            raise _refuse("metadata values must not contain NUL", key=key)
        try:
            size = len(item.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate from JSON's \ud800
            raise _refuse("metadata values must be valid Unicode", key=key) from None
        if size > MAX_VALUE_BYTES:
            raise _refuse("metadata value is too long", key=key, max_value_bytes=MAX_VALUE_BYTES)
        total += len(key) + size
        result[key] = item
    if total > MAX_TOTAL_BYTES:
        raise _refuse("metadata is too large", max_total_bytes=MAX_TOTAL_BYTES)
    return result


def filters_from_query(arguments: Mapping[str, list[bytes]]) -> dict[str, str]:
    """``metadata.<key>=<value>`` query arguments -> {key: value} (exact
    match; a key given twice is refused rather than guessed)."""
    filters: dict[str, str] = {}
    for name, values in arguments.items():
        if not name.startswith(FILTER_PREFIX):
            continue
        key = check_key(name[len(FILTER_PREFIX):])
        if len(values) != 1:
            raise _refuse("a metadata filter may be given once", key=key)
        try:
            filters[key] = values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise _refuse("metadata filter values must be UTF-8", key=key) from None
    if len(filters) > MAX_FILTERS:
        raise _refuse("too many metadata filters", max_filters=MAX_FILTERS)
    return filters
