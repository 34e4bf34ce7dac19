"""Graceful shutdown: SIGTERM during a chunk PUT either lets it finish (and
it is recorded) or cuts it after server.shutdown_timeout (and nothing of it
stays); new requests during the drain are refused; the process exits 0."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import socket
import sqlite3
from pathlib import Path

import pytest

from support import KiB, Api, ServerProcess, wait_until, wait_until_async

CS = 64 * KiB
SECRET = "never-in-the-logs-42"


async def test_requests_during_drain_get_503_and_close(api: Api, runtime) -> None:  # type: ignore[no-untyped-def]
    runtime.drain.start()
    for method, path, body in (("GET", "/healthz", None), ("POST", "/upload/init", b"{}"),
                               ("PUT", f"/upload/{'a' * 32}/chunk?index=0", b"x" * 4096)):
        resp = await api.call(method, path, raw=body)
        assert resp.code == 503, (method, path)
        assert resp.headers["Retry-After"] == "2"
        assert resp.headers["Connection"] == "close"
        assert json.loads(resp.body)["error"]["code"] == "unavailable"


async def test_a_client_gone_mid_chunk_leaves_nothing_in_flight(api: Api, runtime,  # type: ignore[no-untyped-def]
                                                               data_dir: Path) -> None:
    up = await api.init(CS, CS)
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(f"PUT /upload/{up['upload_id']}/chunk?index=0 HTTP/1.1\r\nHost: x\r\n"
                 f"Content-Length: {CS}\r\n\r\n".encode() + b"x" * (CS // 2))
    await writer.drain()
    parts = lambda: list((data_dir / "tmp").rglob("*.part"))  # noqa: E731
    claims = data_dir / "tmp" / up["upload_id"] / "claims"
    await wait_until_async(lambda: claims.exists() and claims.read_bytes()[:1] == b"\x01",
                           "the chunk claimed for writing in place")
    assert runtime.drain.active == 1
    writer.close()
    await wait_until_async(lambda: runtime.drain.active == 0, "the cut request to leave")
    await runtime.drain.wait_tasks()  # what Runtime.stop waits for
    assert parts() == []
    assert claims.read_bytes()[0] != 2  # not marked stored
    assert (await api.status(up["upload_id"]))["received"] == []


async def test_a_json_request_cut_mid_body_leaves_nothing_in_flight(api: Api, runtime  # type: ignore[no-untyped-def]
                                                                   ) -> None:
    # Every handler streams its body, so a cut JSON body never reaches
    # finish() either: without leaving on close it would hold up shutdown.
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(b"POST /upload/init HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"fi")
    await writer.drain()
    await wait_until_async(lambda: runtime.drain.active == 1, "the request to start")
    writer.close()
    await wait_until_async(lambda: runtime.drain.active == 0, "the cut request to leave")


def _start_chunk(server: ServerProcess, upload_id: str, body: bytes) -> socket.socket:
    """A chunk PUT that has sent only the first half of its body."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (f"PUT /upload/{upload_id}/chunk?index=0&token={SECRET} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {SECRET}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body[:len(body) // 2])
    # The server has the chunk open once it claimed it (written in place).
    claims = server.data_dir / "tmp" / upload_id / "claims"
    wait_until(lambda: claims.exists() and claims.read_bytes()[:1] == b"\x01",
               "the chunk claimed for writing in place")
    return sock


def part_files(server: ServerProcess) -> list[Path]:
    return list((server.data_dir / "tmp").rglob("*.part"))


def accepts_connections(server: ServerProcess) -> bool:
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        return True
    except OSError:
        return False


def json_server(tmp_path: Path, shutdown_timeout: float) -> ServerProcess:
    """A server process that logs JSON lines (the log is parsed below)."""
    return ServerProcess(tmp_path, {"server.shutdown_timeout": shutdown_timeout,
                                    "logging.format": "json"})


def _chunk_rows(data_dir: Path, upload_id: str) -> list[tuple]:
    with sqlite3.connect(data_dir / "uploader.db") as db:
        return db.execute("SELECT chunk_index, size, md5 FROM upload_chunks WHERE upload_id = ?",
                          (upload_id,)).fetchall()


@pytest.mark.e2e
def test_sigterm_lets_an_in_flight_chunk_finish(tmp_path: Path) -> None:
    body = os.urandom(CS)
    with json_server(tmp_path, shutdown_timeout=60) as server:
        upload_id = server.init(2 * CS, CS, filename="a.bin")["upload_id"]
        idle = server.connection()  # a keep-alive connection, open before SIGTERM
        idle.request("GET", "/healthz")
        assert idle.getresponse().read()
        sock = _start_chunk(server, upload_id, body)

        server.terminate()
        wait_until(lambda: not accepts_connections(server), "the listener to close")
        # A request on the already open connection is refused, not half served.
        idle.request("GET", "/readyz")
        refused = idle.getresponse()
        assert refused.status == 503 and refused.getheader("Retry-After") == "2"
        assert json.loads(refused.read())["error"]["code"] == "unavailable"
        idle.close()

        sock.sendall(body[len(body) // 2:])
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        doc = json.loads(resp.read())
        sock.close()
        assert resp.status == 200, doc
        assert (doc["index"], doc["received_chunks"]) == (0, 1)
        assert server.wait() == 0

    digest = hashlib.md5(body).hexdigest()
    assert _chunk_rows(server.data_dir, upload_id) == [(0, CS, digest)]
    assert (server.data_dir / "tmp" / upload_id / "data").read_bytes()[:CS] == body
    assert part_files(server) == []
    lines = server.log_lines()
    assert SECRET not in server.logs()
    chunk_lines = [doc for doc in lines if doc.get("route") == "/upload/{id}/chunk"]
    assert [(d["status"], d["index"], d["bytes"]) for d in chunk_lines] == [(200, 0, CS)]
    assert any(doc["msg"] == "shutdown: done" for doc in lines)


@pytest.mark.e2e
def test_sigterm_cuts_a_stalled_chunk_after_the_timeout(tmp_path: Path) -> None:
    body = os.urandom(CS)
    with json_server(tmp_path, shutdown_timeout=0.5) as server:
        upload_id = server.init(CS, CS, filename="b.bin")["upload_id"]
        sock = _start_chunk(server, upload_id, body)

        server.terminate()  # the rest of the body never comes
        assert server.wait() == 0
        # The server hung up without an answer.
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass
        sock.close()

    assert _chunk_rows(server.data_dir, upload_id) == []
    assert part_files(server) == []
    assert (server.data_dir / "tmp" / upload_id / "claims").read_bytes()[0] != 2
    lines = server.log_lines()
    cut = [doc for doc in lines if doc.get("route") == "/upload/{id}/chunk"]
    assert [d["status"] for d in cut] == [499] and 0 <= cut[0]["bytes"] <= CS // 2
    assert any("cutting 1 requests" in doc["msg"] for doc in lines)


@pytest.mark.parametrize("config_overrides", [{"merge": {"wait_seconds": 0}}])
async def test_background_merges_are_waited_for(api: Api, runtime) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(2 * CS)
    up = await api.init(len(data), CS)
    for index in range(2):
        code, _ = await api.put_chunk(up["upload_id"], index, data[index * CS:(index + 1) * CS])
        assert code == 200
    code, doc = await api.complete(up["upload_id"])
    if code == 202:  # the usual case with wait_seconds 0: the merge runs on
        assert await runtime.merges.wait(60)
    assert (await api.status(up["upload_id"]))["status"] == "completed"
    assert await runtime.merges.wait(60)  # nothing left: True at once
