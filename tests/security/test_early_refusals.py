"""Refusals decided from the headers reach every kind of client (issue 13.5).

A chunk PUT refused before its body is read (401, 404, 400, 413, 409, 507)
used to be answered and the connection closed with the body unread: the
kernel then resets the connection, and a client that writes its whole body
before reading (Python's http.client, most scripts) saw ConnectionResetError
instead of the answer. Now the server either avoids the body altogether
(``Expect: 100-continue``: the refusal comes instead of the 100) or answers
at once and reads the announced body into nothing (bounded), so the answer
arrives and the connection stays usable.

Real server, real sockets; bodies of 16 MiB, more than loopback socket
buffers hold, so an unread body really does reset the connection.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from support import KiB, MiB, md5

from .helpers import (AUTH_ON, BOUND, TOKENS, TokenApi, blocking, http_client_exchange,
                       read_response)

CS = 16 * MiB
BODY = bytes(CS)
ALICE = {"Authorization": f"Bearer {TOKENS['alice']}"}


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    return {"auth": dict(AUTH_ON)}


def error_code(body: bytes) -> str:
    return json.loads(body)["error"]["code"]


async def refusal_cases(alice: TokenApi, runtime: Any) -> list[tuple[str, dict, int, str]]:
    """(path, headers, status, code): chunk PUTs refused from their headers."""
    up = (await alice.init(2 * CS, CS))["upload_id"]
    done = (await alice.init(KiB, 1 * MiB))["upload_id"]
    code, _ = await alice.put_chunk(done, 0, b"x" * KiB)
    assert code == 200
    code, _ = await alice.complete(done)
    assert code == 200
    return [
        (f"/upload/{up}/chunk?index=0", {}, 401, "unauthorized"),
        (f"/upload/{'0' * 32}/chunk?index=0", ALICE, 404, "not_found"),
        (f"/upload/{up}/chunk?index=x", ALICE, 400, "invalid_request"),
        (f"/upload/{up}/chunk?index=5", ALICE, 400, "invalid_request"),
        (f"/upload/{done}/chunk?index=0", ALICE, 409, "conflict"),
    ]


async def test_refusals_reach_a_client_that_writes_the_whole_body_first(
        alice: TokenApi, runtime: Any, http_server_port: Any) -> None:
    port = http_server_port[1]
    for path, headers, status, code in await refusal_cases(alice, runtime):
        got, _, body = await blocking(http_client_exchange, port, "PUT", path, BODY, headers)
        assert (got, error_code(body)) == (status, code), path


async def test_too_large_and_no_space_reach_that_client_too(
        alice: TokenApi, runtime: Any, http_server_port: Any) -> None:
    port = http_server_port[1]
    small = (await alice.init(1 * MiB, 1 * MiB))["upload_id"]
    # Announces 16 MiB for a chunk of 1 MiB: 413 before the body.
    got, _, body = await blocking(http_client_exchange, port, "PUT",
                                  f"/upload/{small}/chunk?index=0", BODY, ALICE)
    assert (got, error_code(body)) == (413, "too_large")
    up = (await alice.init(CS, CS))["upload_id"]
    # The free-space reserve now exceeds any disk: every chunk is refused
    # with 507 before its body is read (the check reads the live config).
    runtime.config.storage.min_free_bytes = 1 << 60
    got, _, body = await blocking(http_client_exchange, port, "PUT",
                                  f"/upload/{up}/chunk?index=0", BODY, ALICE)
    assert (got, error_code(body)) == (507, "insufficient_storage")


async def test_a_json_refusal_reaches_that_client(alice: TokenApi, http_server_port: Any) -> None:
    port = http_server_port[1]
    init = json.dumps({"filename": "a" * 60000, "size": 1, "chunk_size": MiB}).encode()
    got, _, body = await blocking(http_client_exchange, port, "POST", "/upload/init", init)
    assert (got, error_code(body)) == (401, "unauthorized")
    # Over server.max_json_body: 413, not a bare 400 and a reset.
    big = b'{"filename": "' + b"a" * (4 * MiB) + b'"}'
    got, _, body = await blocking(http_client_exchange, port, "POST", "/upload/init", big, ALICE)
    assert (got, error_code(body)) == (413, "too_large")


def keep_alive_after_refusal(port: int, upload_id: str) -> list[tuple[int, str]]:
    """A refused PUT with its whole body, then a good PUT on the same connection."""
    good = b"g" * MiB
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock:
        answers = []
        for index, body, token in ((0, BODY[:MiB], "wrong"), (0, good, TOKENS["alice"])):
            head = (f"PUT /upload/{upload_id}/chunk?index={index}&md5={md5(body)} HTTP/1.1\r\n"
                    f"Host: x\r\nAuthorization: Bearer {token}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            sock.sendall(head + body)
            status, _, data = read_response(sock, "PUT")
            answers.append((status, error_code(data) if status != 200 else "ok"))
        return answers


async def test_the_connection_stays_usable_after_a_refused_body(
        alice: TokenApi, http_server_port: Any) -> None:
    up = (await alice.init(MiB, MiB))["upload_id"]
    answers = await blocking(keep_alive_after_refusal, http_server_port[1], up)
    assert answers == [(401, "unauthorized"), (200, "ok")]
    assert (await alice.status(up))["received"] == [0]


def expect_continue(port: int, path: str, body: bytes, token: str) -> tuple[bytes, int, Any, bytes]:
    """Headers with Expect: 100-continue; the body only after a 100. Returns
    the first line the server sent, then the final status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock:
        sock.sendall((f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                      f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n").encode())
        first = b""
        while len(first) < 12:  # peeked, not consumed: http.client parses it below
            first = sock.recv(12, socket.MSG_PEEK | socket.MSG_WAITALL)
            assert first, "connection closed without an answer"
        if first.endswith(b" 100"):
            sock.sendall(body)
        status, headers, data = read_response(sock, "PUT")
        return first, status, headers, data


async def test_expect_100_continue(alice: TokenApi, http_server_port: Any) -> None:
    port = http_server_port[1]
    up = (await alice.init(MiB, MiB))["upload_id"]
    path = f"/upload/{up}/chunk?index=0"
    # Refused: the final answer comes instead of the 100; no body is sent.
    first, status, headers, data = await blocking(expect_continue, port, path, BODY, "wrong")
    assert first == b"HTTP/1.1 401" and status == 401 and error_code(data) == "unauthorized"
    assert headers["Connection"] == "close"
    # Accepted: 100 Continue, then the body, then 200.
    body = b"c" * MiB
    first, status, _, data = await blocking(expect_continue, port, path, body, TOKENS["alice"])
    assert first == b"HTTP/1.1 100" and status == 200, data
    assert json.loads(data)["md5"] == md5(body)


async def test_a_body_beyond_any_chunk_is_answered_then_cut(
        alice: TokenApi, config: Any, http_server_port: Any) -> None:
    """Reading is bounded by the largest chunk the server accepts: a refused
    request announcing more gets its answer and ``Connection: close``."""
    up = (await alice.init(MiB, MiB))["upload_id"]
    announced = config.limits.chunk_size_max + 1

    def exchange() -> tuple[int, Any, bytes]:
        with socket.create_connection(("127.0.0.1", http_server_port[1]), timeout=BOUND) as sock:
            sock.sendall((f"PUT /upload/{up}/chunk?index=0 HTTP/1.1\r\nHost: x\r\n"
                          f"Content-Length: {announced}\r\n\r\n").encode())
            answer = read_response(sock, "PUT")
            assert sock.recv(1) == b""  # closed by the server, nothing else sent
            return answer

    status, headers, data = await blocking(exchange)
    assert status == 401 and error_code(data) == "unauthorized"
    assert headers["Connection"] == "close"
