"""Hand-made requests: malformed input is a 4xx JSON error, never a 500
(issue 13, items 3, 6, 7, 8, 9).

Raw sockets where a client library would fix the request up before sending
it (Content-Length, Transfer-Encoding, odd Range values).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from support import KiB, MiB, Api

from .helpers import blocking, raw_exchange

CS = 64 * KiB


def assert_error(status: int, body: bytes, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert json.loads(body)["error"]["code"] == code


async def completed(api: Api, data: bytes) -> str:
    up = (await api.init(len(data), CS))["upload_id"]
    for i in range(0, len(data), CS):
        code, doc = await api.put_chunk(up, i // CS, data[i:i + CS])
        assert code == 200, doc
    code, doc = await api.complete(up)
    assert code == 200, doc
    return up


# -- JSON bodies ----------------------------------------------------------------------

DEEP = [b"[" * 1000 + b"]" * 1000,
        b'{"a":' * 1000 + b"1" + b"}" * 1000,
        b'{"filename": "a", "size": 1, "chunk_size": 65536, "x": ' + b"[" * 5000 + b"]" * 5000
        + b"}"]


@pytest.mark.parametrize("body", DEEP, ids=["array", "object", "inside"])
async def test_deeply_nested_json_is_400(api: Api, body: bytes) -> None:
    up = (await api.init(1, CS))["upload_id"]
    for path in ("/upload/init", f"/upload/{up}/complete"):
        code, doc = await api.json("POST", path, raw=body)
        assert code == 400 and doc["error"]["code"] == "invalid_request", (path, doc)


@pytest.mark.parametrize("body", [
    # Which "size" counts would depend on the parser: refused, not guessed.
    b'{"filename": "a", "size": 1, "size": 99, "chunk_size": 65536}',
    b'{"filename": "a", "size": ' + b"9" * 5000 + b', "chunk_size": 65536}',
    b'{"filename": "a", "size": 1e999, "chunk_size": 65536}',
    b'{"filename": "a", "size": NaN, "chunk_size": 65536}',
    b'{"filename": "a", "size": Infinity, "chunk_size": 65536}',
    b'{"filename": "a", "size": 1, "chunk_size": 65536, "md5": "' + b"\xff" * 32 + b'"}',
    b'\xef\xbb\xbf{"filename": "a", "size": 1, "chunk_size": 65536}',
    '{"filename": "a", "size": 1, "chunk_size": 65536}'.encode("utf-16"),
], ids=["duplicate-key", "5000-digits", "1e999", "NaN", "Infinity", "not-utf8", "bom", "utf16"])
async def test_odd_json_is_400(api: Api, body: bytes) -> None:
    code, doc = await api.json("POST", "/upload/init", raw=body)
    assert code == 400 and doc["error"]["code"] == "invalid_request", doc


async def test_chunk_size_zero_is_refused(api: Api) -> None:
    """Only an absent chunk_size takes the default (item 8)."""
    for chunk_size in (0, -1):
        code, doc = await api.json("POST", "/upload/init",
                                   {"filename": "a", "size": 10, "chunk_size": chunk_size})
        assert code == 400 and doc["error"]["code"] == "invalid_request", doc
        assert doc["error"]["chunk_size_min"] == CS // 64  # the test config's minimum
    code, doc = await api.json("POST", "/upload/init", {"filename": "a", "size": 10})
    assert code == 201 and doc["chunk_size"] == 8 * MiB


async def test_json_body_over_the_limit_is_413(api: Api, config: Any, http_server_port: Any
                                               ) -> None:
    """Over server.max_json_body: 413 too_large as JSON, whether the length
    was announced or the body came chunked (item 6)."""
    port = http_server_port[1]
    over = config.server.max_json_body + 1
    body = b'{"filename": "' + b"a" * over + b'"}'
    status, _, data = await blocking(raw_exchange, port, (
        f"POST /upload/init HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body, "POST")
    assert_error(status, data, 413, "too_large")
    assert json.loads(data)["error"]["max_json_body"] == config.server.max_json_body
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 8192]), body[i:i + 8192])
                       for i in range(0, len(body), 8192)) + b"0\r\n\r\n"
    status, _, data = await blocking(raw_exchange, port, (
        "POST /upload/init HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode() + chunked, "POST")
    assert_error(status, data, 413, "too_large")


# -- numbers in headers and query strings ---------------------------------------------

@pytest.mark.parametrize("length", ["\xb2", "\xb9", "+65536", "65536x", "0x10000",
                                    "1_000", "9" * 5000, "65536, 65535", "-1"])
async def test_content_length_must_be_ascii_digits(api: Api, http_server_port: Any,
                                                   length: str) -> None:
    up = (await api.init(CS, CS))["upload_id"]
    for head in (f"PUT /upload/{up}/chunk?index=0", "POST /upload/init"):
        request = f"{head} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
        # Latin-1 on the wire, as Tornado decodes header bytes.
        status, _, data = await blocking(raw_exchange, http_server_port[1],
                                         request.encode("latin-1"), head.split()[0])
        assert_error(status, data, 400, "invalid_request")
    assert (await api.status(up))["received"] == []


async def test_both_content_length_and_chunked_is_400(api: Api, http_server_port: Any) -> None:
    up = (await api.init(CS, CS))["upload_id"]
    status, _, data = await blocking(raw_exchange, http_server_port[1], (
        f"PUT /upload/{up}/chunk?index=0 HTTP/1.1\r\nHost: x\r\nContent-Length: {CS}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n").encode(), "PUT")
    assert_error(status, data, 400, "invalid_request")


@pytest.mark.parametrize("index", ["%EF%BC%91", "%D9%A1", "%C2%B9", "+1", "%201", "1_0",
                                   "0x1", "1" * 10])
async def test_chunk_index_is_ascii_digits_only(api: Api, index: str) -> None:
    """``index=１`` (fullwidth) used to be chunk 1 (item 9)."""
    up = (await api.init(2 * CS, CS))["upload_id"]
    code, doc = await api.json("PUT", f"/upload/{up}/chunk?index={index}", raw=bytes(CS))
    assert code == 400 and doc["error"]["code"] == "invalid_request", doc
    assert (await api.status(up))["received"] == []


@pytest.mark.parametrize("header, status, content_range", [
    ("bytes=" + "9" * 5000 + "-", 416, "bytes */3000"),        # first byte past the end
    ("bytes=-" + "9" * 5000, 206, "bytes 0-2999/3000"),        # suffix longer than the file
    ("bytes=10-" + "9" * 5000, 206, "bytes 10-2999/3000"),     # last byte past the end
    ("bytes=\xb9-\xb2", 200, None),                             # not ASCII: not a range
    ("bytes=1_0-20", 200, None),
])
async def test_range_numbers(api: Api, header: str, status: int,
                             content_range: str | None) -> None:
    up = await completed(api, bytes(range(256)) * 11 + bytes(184))
    resp = await api.call("GET", f"/files/{up}", headers={"Range": header})
    assert resp.code == status, resp.body[:200]
    assert resp.headers.get("Content-Range") == content_range
    if status == 416:
        assert json.loads(resp.body)["error"]["code"] == "range_not_satisfiable"


# -- method answers ----------------------------------------------------------------

@pytest.mark.parametrize("method, path, allow", [
    ("GET", "/upload/{id}/chunk?index=0", "PUT, OPTIONS"),
    ("POST", "/upload/{id}/chunk?index=0", "PUT, OPTIONS"),
    ("PUT", "/upload/init", "POST, OPTIONS"),
    ("POST", "/upload/{id}/status", "GET, OPTIONS"),
    ("GET", "/upload/{id}/complete", "POST, OPTIONS"),
    ("PATCH", "/uploads", "GET, OPTIONS"),
    ("PUT", "/files/{id}", "GET, HEAD, PATCH, DELETE, OPTIONS"),
    ("PROPFIND", "/upload/{id}", "DELETE, OPTIONS"),
])
async def test_405_names_the_allowed_methods(api: Api, method: str, path: str,
                                             allow: str) -> None:
    """RFC 9110 15.5.6: a 405 carries Allow (item 7)."""
    up = (await api.init(1, CS))["upload_id"]
    resp = await api.call(method, path.format(id=up), raw=b"" if method != "GET" else None)
    assert resp.code == 405, resp.body
    assert json.loads(resp.body)["error"]["code"] == "method_not_allowed"
    assert resp.headers["Allow"] == allow
