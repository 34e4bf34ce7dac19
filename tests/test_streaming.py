"""Chunk bodies stream to their own .part file; a client that leaves mid-chunk
leaves nothing behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

from support import KiB, Api, md5, wait_until_async

CS = 256 * KiB


def part_files(data_dir: Path) -> list[Path]:
    return list((data_dir / "tmp").rglob("*.part"))


async def open_chunk_put(api: Api, upload_id: str, index: int, length: int):  # type: ignore[no-untyped-def]
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write((f"PUT /upload/{upload_id}/chunk?index={index} HTTP/1.1\r\n"
                  f"Host: test\r\nContent-Length: {length}\r\n\r\n").encode())
    await writer.drain()
    return reader, writer


async def test_disconnect_mid_chunk_leaves_nothing(api: Api, runtime,  # type: ignore[no-untyped-def]
                                                   data_dir: Path) -> None:
    up = await api.init(2 * CS, CS)
    uid = up["upload_id"]
    code, _ = await api.put_chunk(uid, 1, bytes(CS))
    assert code == 200
    reader, writer = await open_chunk_put(api, uid, 0, CS)
    writer.write(b"a" * (CS // 2))
    await writer.drain()
    # The first writer of chunk 0 writes in place: its claims byte is 1.
    claims = data_dir / "tmp" / uid / "claims"
    await wait_until_async(lambda: claims.read_bytes()[0] == 1, "chunk 0 being written")
    # While this chunk stalls, other requests are served.
    status = await api.status(uid)
    assert status["received"] == [1]
    writer.close()
    await wait_until_async(lambda: runtime.storage.data_files.claims_held == 0,
                           "the claim let go")
    status = await api.status(uid)
    assert status["received"] == [1]
    assert claims.read_bytes()[0] != 2  # never marked stored


async def test_disconnect_while_replacing_keeps_old_chunk(api: Api, data_dir: Path) -> None:
    up = await api.init(CS, CS)
    uid = up["upload_id"]
    original = b"o" * CS
    code, doc = await api.put_chunk(uid, 0, original)
    assert code == 200
    reader, writer = await open_chunk_put(api, uid, 0, CS)
    writer.write(b"n" * (CS // 2))
    await writer.drain()
    # Written once already: the replacement is received aside.
    await wait_until_async(lambda: len(part_files(data_dir)) == 1, "the replacement's .part file")
    writer.close()
    await wait_until_async(lambda: not part_files(data_dir), "the .part file to be removed")
    assert (data_dir / "tmp" / uid / "data").read_bytes() == original
    code, done = await api.complete(uid, md5(original))
    assert code == 200


async def test_large_chunk_streams_in_pieces(api: Api, data_dir: Path) -> None:
    """A chunk larger than Tornado's default 100 MB buffer is not needed to
    prove streaming; a body several read-sizes long must arrive intact and
    exceed the 64 KiB JSON body limit without being refused."""
    size = 3 * 1024 * KiB + 123
    up = await api.init(size, 4 * 1024 * KiB)
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    code, doc = await api.put_chunk(up["upload_id"], 0, data, md5(data))
    assert code == 200 and doc["size"] == size
    code, done = await api.complete(up["upload_id"], md5(data))
    assert code == 200
