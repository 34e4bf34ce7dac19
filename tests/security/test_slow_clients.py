"""Slow and idle clients: cut off without harming anyone else.

Short timeouts in this file's config keep it quick; every wait for the server
to act is a bounded poll on a condition or a bounded read, never a sleep.
The only sleeps are the trickling client's own pace.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
from pathlib import Path
from typing import Any

import pytest
import tornado.iostream
import tornado.tcpclient

from support import KiB, Api, md5, wait_until_async

CS = 64 * KiB
BOUND = 30.0  # seconds any single wait may take before the test fails


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    return {"connections": {"chunk_idle_timeout": 1.5, "header_timeout": 2,
                            # 64 KiB chunk deadline = 64 KiB / 64 KiB/s + 1.5 s
                            "min_chunk_rate": CS, "max_per_address": 1000}}


async def connect(port: int) -> tornado.iostream.IOStream:
    return await tornado.tcpclient.TCPClient().connect("127.0.0.1", port)


async def wait_closed(stream: tornado.iostream.IOStream) -> bytes:
    """What the server sent before closing the connection."""
    try:
        return await asyncio.wait_for(stream.read_until_close(), BOUND)
    except tornado.iostream.StreamClosedError:
        return b""


def being_written(data_dir: Path, upload_id: str, index: int) -> bool:
    """The chunk's first writer is at it (its claims byte is set: it writes
    in place into the upload's data file)."""
    claims = data_dir / "tmp" / upload_id / "claims"
    return claims.exists() and claims.read_bytes()[index:index + 1] == b"\x01"


def nothing_in_flight(runtime) -> bool:  # type: ignore[no-untyped-def]
    return runtime.storage.data_files.claims_held == 0 and not [
        p for p in (runtime.config.data_dir / "tmp").rglob("*.part")]


async def full_upload(api: Api, size: int) -> None:
    data = os.urandom(size)
    up = await api.init(size, CS)
    for i in range(0, size, CS):
        code, doc = await api.put_chunk(up["upload_id"], i // CS, data[i:i + CS])
        assert code == 200, doc
    code, done = await api.complete(up["upload_id"], md5(data))
    assert code == 200 and done["status"] == "completed", done


def chunk_head(upload_id: str, index: int, length: int) -> bytes:
    return (f"PUT /upload/{upload_id}/chunk?index={index} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


async def test_trickling_client_is_cut_off_while_a_normal_one_finishes(
        api: Api, http_server_port, data_dir: Path, runtime):
    up = await api.init(2 * CS, CS)
    uid = up["upload_id"]
    code, _ = await api.put_chunk(uid, 0, b"a" * CS)
    assert code == 200
    stream = await connect(http_server_port[1])
    await stream.write(chunk_head(uid, 1, CS))

    async def trickle() -> None:
        # One byte a second, never idle long enough for the idle watchdog:
        # the body deadline (length / min_chunk_rate + idle timeout) ends it.
        try:
            for _ in range(CS):
                await stream.write(b"b")
                await asyncio.sleep(1)
        except tornado.iostream.StreamClosedError:
            pass

    trickler = asyncio.ensure_future(trickle())
    await wait_until_async(lambda: being_written(data_dir, uid, 1),
                           "the trickled chunk being written", BOUND)
    await full_upload(api, 3 * CS + 5)  # someone else, at full speed, meanwhile
    await asyncio.wait_for(trickler, BOUND)
    assert stream.closed()
    await wait_until_async(lambda: nothing_in_flight(runtime),
                           "the partial chunk to be discarded", BOUND)
    status = await api.status(uid)
    assert status["status"] == "in_progress" and status["received"] == [0]
    # The upload goes on normally afterwards.
    code, _ = await api.put_chunk(uid, 1, b"b" * CS)
    assert code == 200


async def test_silent_client_is_cut_off_by_the_idle_timeout(api: Api, http_server_port,
                                                            data_dir: Path, runtime):
    up = await api.init(CS, CS)
    uid = up["upload_id"]
    stream = await connect(http_server_port[1])
    await stream.write(chunk_head(uid, 0, CS) + b"x" * 1000)  # then nothing
    # Closed without an answer (there is nobody to answer who sends nothing).
    assert await wait_closed(stream) == b""
    await wait_until_async(lambda: nothing_in_flight(runtime),
                           "the partial chunk to be discarded", BOUND)
    status = await api.status(uid)
    assert status["status"] == "in_progress" and status["received"] == []


async def test_incomplete_headers_are_cut_off(http_server, http_server_port):
    stream = await connect(http_server_port[1])
    await stream.write(b"GET /uploads HTTP/1.1\r\nHost: x\r\n")  # headers never end
    assert await wait_closed(stream) == b""


class TestManyIdleConnections:
    @pytest.fixture
    def config_overrides(self) -> dict[str, dict[str, Any]]:
        # Long header timeout: the idle connections must stay open throughout.
        return {"connections": {"header_timeout": 120, "max_per_address": 1000}}

    async def test_200_idle_connections_do_not_stop_a_normal_upload(
            self, api: Api, http_server, http_server_port):
        streams = []
        try:
            for i in range(200):
                stream = await connect(http_server_port[1])
                if i % 2:  # half of them half-way through their headers
                    await stream.write(b"POST /upload/init HTTP/1.1\r\n")
                streams.append(stream)
            await wait_until_async(lambda: http_server.open_per_address["127.0.0.1"] >= 200,
                                   "the server to accept 200 connections", BOUND)
            await full_upload(api, 4 * CS + 1)
            # They were all still held while the upload ran.
            assert http_server.open_per_address["127.0.0.1"] >= 200
            assert not any(stream.closed() for stream in streams)
        finally:
            for stream in streams:
                stream.close()


class TestPerAddressCap:
    @pytest.fixture
    def config_overrides(self) -> dict[str, dict[str, Any]]:
        return {"connections": {"max_per_address": 3}}

    async def test_connections_over_the_cap_get_429(self, api: Api, http_server,
                                                    http_server_port):
        port = http_server_port[1]
        held = [await connect(port) for _ in range(3)]
        await wait_until_async(lambda: http_server.open_per_address["127.0.0.1"] == 3,
                               "three open connections", BOUND)
        extra = await connect(port)
        await extra.write(b"GET /uploads HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await wait_closed(extra)
        assert answer.startswith(b"HTTP/1.1 429 ") and b'"code":"rate_limited"' in answer
        assert b'"retryable":true' in answer   # clients retry from the answer itself
        assert b"Retry-After: 1" in answer
        # Closing one frees its slot for the next client.
        held.pop().close()
        await wait_until_async(lambda: http_server.open_per_address["127.0.0.1"] == 2,
                               "a freed slot", BOUND)
        code, doc = await api.json("GET", "/uploads")
        assert code == 200, doc
        for stream in held:
            stream.close()
        await wait_until_async(lambda: "127.0.0.1" not in http_server.open_per_address
                               or http_server.open_per_address["127.0.0.1"] <= 1,
                               "every slot freed", BOUND)

    async def test_a_refused_chunk_gets_its_429_not_a_broken_pipe(self, http_server,
                                                                  http_server_port):
        """http.client (like uploader/client.py) writes the whole body before
        reading: the refusal was sent, then the connection closed under the
        body, and the client saw a broken pipe or a reset instead of the 429
        (the kernel's reset destroys the answer it had already received)."""
        port = http_server_port[1]
        held = [await connect(port) for _ in range(3)]
        await wait_until_async(lambda: http_server.open_per_address["127.0.0.1"] == 3,
                               "three open connections", BOUND)

        def put_chunk() -> tuple[int, str | None, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND)
            try:
                # 8 MiB: far more than the socket buffers take before the close.
                conn.request("PUT", f"/upload/{'0' * 32}/chunk?index=0", b"x" * (8 << 20))
                resp = conn.getresponse()
                return resp.status, resp.getheader("Retry-After"), resp.read()
            finally:
                conn.close()

        loop = asyncio.get_running_loop()
        for _ in range(3):
            status, retry_after, body = await loop.run_in_executor(None, put_chunk)
            assert (status, retry_after) == (429, "1")
            assert json.loads(body)["error"]["code"] == "rate_limited"
        for stream in held:
            stream.close()
