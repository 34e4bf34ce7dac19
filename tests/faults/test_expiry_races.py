"""An acknowledged chunk is never deleted by a running expiry sweep (issue
13.2), over real HTTP with a one-second TTL, on SQLite and MariaDB.

- The sweep decides an upload is idle, a chunk then arrives and is answered
  200: the sweep's claim re-checks activity atomically and leaves it alone.
- A chunk whose body streams for longer than the TTL counts as activity all
  along, for another instance's sweep too (its own database connections and
  locks): it leaves the upload alone and the chunk ends in 200, not 404.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from support import KiB, Api, MySQLServer, md5
from uploader.cleanup import Expirer
from uploader.locks.memory import MemoryLocks
from uploader.models import IN_PROGRESS, utcnow
from uploader.runtime import build_service, make_store

TTL = 1  # seconds: the shortest expiry.ttl there is


@pytest.fixture(params=["sqlite", "mysql"])
def config_overrides(request) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    settings: dict[str, dict[str, Any]] = {"expiry": {"ttl": TTL}}
    if request.param == "mysql":
        server: MySQLServer = request.getfixturevalue("mysql_server")
        settings["store"] = {"backend": "mysql", "mysql_dsn": server.create_database(),
                             "pool_size": 4}
    return settings


async def idle_for_longer_than_ttl(runtime: Any, upload_id: str) -> None:
    """As if nothing had happened to it for an hour (the row, behind the API)."""
    old = utcnow() - timedelta(seconds=3600)
    assert await runtime.store.touch([upload_id], old, utcnow() + timedelta(seconds=1)) == 1


async def test_chunk_answered_after_the_sweep_decided_keeps_its_upload(
        api: Api, runtime) -> None:  # type: ignore[no-untyped-def]
    data = [b"a" * KiB, b"b" * KiB]
    uid = (await api.init(2 * KiB, KiB))["upload_id"]
    await idle_for_longer_than_ttl(runtime, uid)

    # The pause point: the sweep has found its expired uploads (decided) and
    # waits before acting on them. A wrapper of the real query, not a fake
    # database: the race is made deterministic, nothing else changes.
    store = runtime.store
    real_find = store.find_expired
    decided, release = asyncio.Event(), asyncio.Event()

    async def find_then_pause(*args: Any, **kw: Any) -> Any:
        found = await real_find(*args, **kw)
        if found and not decided.is_set():
            assert [u.upload_id for u in found] == [uid]
            decided.set()
            await release.wait()
        return found

    store.find_expired = find_then_pause
    sweep = asyncio.ensure_future(runtime.expirer.sweep())
    await asyncio.wait_for(decided.wait(), 30)
    code, answer = await api.put_chunk(uid, 0, data[0])
    assert code == 200, answer  # acknowledged after the decision...
    release.set()
    report = await asyncio.wait_for(sweep, 30)
    # ... so the sweep must not take it away.
    assert report.expired == [] and report.failed == []
    status = await api.status(uid)
    assert status["status"] == IN_PROGRESS and status["received"] == [0]
    assert (await api.put_chunk(uid, 1, data[1]))[0] == 200
    code, done = await api.complete(uid)
    assert code == 200 and done["md5"] == md5(b"".join(data))


async def updated_at(api: Api, uid: str) -> datetime:
    stamp = (await api.status(uid))["updated_at"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).replace(tzinfo=None)


async def test_chunk_streaming_longer_than_the_ttl_is_activity(
        api: Api, runtime) -> None:  # type: ignore[no-untyped-def]
    size = 64 * KiB
    body = bytes(range(256)) * (size // 256)
    up = await api.init(size, size)
    uid = up["upload_id"]
    created = await updated_at(api, uid)
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    try:
        head = await stream_past_the_ttl(api, runtime, uid, created, body, reader, writer)
    finally:
        writer.close()
    assert head.split()[1] == b"200", head
    status = await api.status(uid)
    assert status["status"] == IN_PROGRESS and status["received"] == [0]
    code, done = await api.complete(uid)
    assert code == 200 and done["md5"] == md5(body)


async def stream_past_the_ttl(api: Api, runtime: Any, uid: str, created: datetime,
                              body: bytes, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> bytes:
    size = len(body)
    writer.write((f"PUT /upload/{uid}/chunk?index=0 HTTP/1.1\r\nHost: t\r\n"
                  f"Content-Length: {size}\r\n\r\n").encode() + body[:size // 2])
    await writer.drain()
    # The body stalls half-way while the server marks the upload active: wait
    # (polling, as wait_until does) until its last activity is more than a
    # TTL after its creation, i.e. the chunk has been streaming that long.
    deadline = time.monotonic() + 30
    while await updated_at(api, uid) <= created + timedelta(seconds=TTL):
        assert time.monotonic() < deadline, "a streaming chunk never marked its upload"
        await asyncio.sleep(0.05)
    # Another instance sweeps: the mark must be in the database, not in the
    # memory of the process receiving the chunk.
    other = make_store(runtime.config)
    await other.open()
    try:
        service = build_service(runtime.config, other, runtime.storage, MemoryLocks(),
                                runtime.executor, runtime.metrics)
        report = await Expirer(runtime.config, service, runtime.metrics).sweep()
    finally:
        await other.close()
    assert report.expired == [], "the sweep removed an upload with a chunk in flight"
    writer.write(body[size // 2:])
    await writer.drain()
    return await reader.readuntil(b"\r\n\r\n")
