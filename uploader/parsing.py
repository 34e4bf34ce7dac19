"""Strict parsers for numbers and JSON that come from outside.

Python's own are generous in ways a server must not be: ``"²".isdigit()`` is
true, ``int("１")`` is 1 (a fullwidth digit), ``int(" 7 ")``, ``int("+7")`` and
``int("1_0")`` all work, ``int()`` of 5000 digits raises ValueError (the
conversion limit) and ``json.loads`` takes ``NaN``, keeps the last of two
equal keys and raises RecursionError on deep nesting. Everything here either
returns the value or raises ``ValueError`` with a message a client can read;
callers turn that into a 400 from the error table.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# 18 digits keep every value below 2**63: it fits every integer column and
# is far beyond any size or count the server accepts.
MAX_DIGITS = 18
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
# A JSON number longer than this is no size, count or index of ours.
MAX_JSON_NUMBER = 40


def parse_ascii_int(text: str, *, max_digits: int = MAX_DIGITS) -> int:
    """A non-negative decimal integer of ASCII digits only (no sign, spaces
    or underscores), at most ``max_digits`` long."""
    if not 0 < len(text) <= max_digits or not _DIGITS.fullmatch(text):
        raise ValueError(f"expected at most {max_digits} ASCII digits")
    return int(text)


def _json_int(text: str) -> int:
    if len(text) > MAX_JSON_NUMBER:
        raise ValueError("number too long")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text) if len(text) <= MAX_JSON_NUMBER else math.inf
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # I-JSON (RFC 7493): names are unique. With two "size" keys, which one a
    # proxy or a log reader believes is anyone's guess: refuse instead.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_json_object, parse_int=_json_int,
                            parse_float=_json_float, parse_constant=_json_constant)


def parse_json(body: bytes) -> Any:
    """A JSON document in UTF-8 (RFC 8259 section 8.1: no other encoding, no
    byte order mark), unique keys, finite numbers of bounded length."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8") from None
    try:
        return _DECODER.decode(text)
    except RecursionError:
        # The decoder recurses per nesting level; Python stops it cleanly at
        # its recursion limit. No request of ours nests more than 3 deep.
        raise ValueError("JSON nested too deep") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"body is not valid JSON ({exc.msg})") from None
