"""Concurrent writers: two PUTs of one chunk never interleave, and a chunk
PUT racing a complete either lands before the merge or is refused 409."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from support import KiB, Api, chunks_of, md5, wait_until_async

CS = 256 * KiB


async def raw_put(api: Api, upload_id: str, index: int, body: bytes):  # type: ignore[no-untyped-def]
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write((f"PUT /upload/{upload_id}/chunk?index={index} HTTP/1.1\r\nHost: t\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode())
    return reader, writer


async def read_status(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    return int(head.split()[1])


@pytest.mark.parametrize("step", [1 * KiB, 16 * KiB, 64 * KiB])
async def test_two_puts_of_one_chunk_never_interleave(api: Api, runtime, data_dir: Path,
                                                      step: int) -> None:
    up = await api.init(CS, CS)
    uid = up["upload_id"]
    a, b = b"A" * CS, b"B" * CS
    ra, wa = await raw_put(api, uid, 0, a)
    rb, wb = await raw_put(api, uid, 0, b)
    for offset in range(0, CS, step):  # interleave the two bodies piece by piece
        wa.write(a[offset:offset + step])
        wb.write(b[offset:offset + step])
        await asyncio.gather(wa.drain(), wb.drain())
    assert await read_status(ra) == 200 and await read_status(rb) == 200
    wa.close()
    wb.close()
    # One writer wrote in place (its claim), the other was received aside
    # and replaced or matched it under the lock: never a mix.
    content = (data_dir / "tmp" / uid / "data").read_bytes()[:CS]
    assert content in (a, b)
    [record] = await runtime.store.get_chunks(uid)
    assert record.md5 == md5(content)  # the record describes the bytes on disk
    code, done = await api.complete(uid)
    assert code == 200 and done["md5"] == md5(content)


async def test_a_resend_never_lands_under_a_first_writer_still_writing(
        api: Api, runtime, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 19: the first writer A streams into the data file in place; B,
    received aside, has its whole body while A is half-way. B's bytes must
    not be copied in place before A is done (A's last pieces would land over
    them): B waits for A's claim, then replaces A's chunk under the lock."""
    up = await api.init(CS, CS)
    uid = up["upload_id"]
    a, b = b"A" * CS, b"B" * CS
    ra, wa = await raw_put(api, uid, 0, a)
    wa.write(a[:CS // 2])
    await wa.drain()
    claims = data_dir / "tmp" / uid / "claims"
    await wait_until_async(lambda: claims.exists() and claims.read_bytes()[0] == 1,
                           "A writing chunk 0 in place")
    rb, wb = await raw_put(api, uid, 0, b)
    wb.write(b)
    await wb.drain()

    def b_received() -> bool:
        parts = list((data_dir / "tmp" / uid).glob("chunk_0.*.part"))
        return bool(parts) and parts[0].stat().st_size == CS
    await wait_until_async(b_received, "B's whole body received aside")
    wa.write(a[CS // 2:])
    await wa.drain()
    assert await read_status(ra) == 200 and await read_status(rb) == 200
    wa.close()
    wb.close()
    content = (data_dir / "tmp" / uid / "data").read_bytes()
    assert content == b  # B came second: it replaced A's chunk whole
    [record] = await runtime.store.get_chunks(uid)
    assert record.md5 == md5(b)


@pytest.mark.parametrize("hold", [0, 1, 2, 3])
async def test_chunk_racing_complete_lands_or_is_refused(api: Api, runtime, hold: int) -> None:
    data = bytes(range(256)) * (4 * CS // 256)
    parts = chunks_of(data, CS)
    up = await api.init(len(data), CS)
    uid = up["upload_id"]
    for index, part in enumerate(parts):
        assert (await api.put_chunk(uid, index, part))[0] == 200
    replacement = b"R" * CS
    reader, writer = await raw_put(api, uid, 0, replacement)
    writer.write(replacement[:-1])
    await writer.drain()
    complete = asyncio.ensure_future(api.complete(uid))
    for _ in range(hold):  # let the merge get a different head start each time
        await asyncio.sleep(0)
    writer.write(replacement[-1:])
    await writer.drain()
    put_status = await read_status(reader)
    writer.close()
    code, done = await complete
    assert code == 200
    assert put_status in (200, 409)
    stored = (await api.call("GET", done["location"])).body
    expected = (replacement if put_status == 200 else parts[0]) + b"".join(parts[1:])
    if put_status == 200 and stored != expected:
        # Landed after the merge read chunk 0? Then it must have been refused.
        pytest.fail("a chunk answered 200 is not in the merged file")
    assert stored == expected, "a chunk refused 409 changed the merged file"
    assert done["md5"] == hashlib.md5(stored).hexdigest()
