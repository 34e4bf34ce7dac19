"""Issue 13.1: the embedded SQLite store shares one connection between every
request; concurrent completes and deletes of different uploads must never
meet inside one transaction ("cannot start a transaction within a
transaction", answered 500). Real HTTP, each request on its own connection,
all sent at once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from support import KiB, Api, md5

SIZE = 2 * KiB


@pytest.fixture
def config_overrides():  # type: ignore[no-untyped-def]
    # 250 connections from one address at once; the events outbox gets a
    # dispatcher pass per change (a sink is set) so its transactions race too.
    return {"connections": {"max_per_address": 0},
            "quota": {"max_active_uploads": 0},
            "merge": {"wait_seconds": 30, "incremental": False},
            "webhooks": {"endpoints": [{"url": "http://127.0.0.1:9/hook",
                                         "secret": "whsec_" + "eHh4" * 8}]}}


async def request(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write((f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
                      f"Content-Type: application/json\r\nConnection: close\r\n\r\n").encode()
                     + body)
        raw = await reader.read()
    finally:
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(rest) if rest else None


async def test_200_completes_and_50_deletes_at_once_never_500(api: Api, runtime) -> None:
    ids = []
    for n in range(250):
        data = n.to_bytes(2, "big") * (SIZE // 2)
        up = await api.init(SIZE, SIZE)
        code, _ = await api.put_chunk(up["upload_id"], 0, data, md5(data))
        assert code == 200
        ids.append((up["upload_id"], md5(data)))
    completes, deletes = ids[:200], ids[200:]
    results = await asyncio.gather(
        *(request(api.port, "POST", f"/upload/{uid}/complete") for uid, _ in completes),
        *(request(api.port, "DELETE", f"/upload/{uid}") for uid, _ in deletes))
    codes = [code for code, _ in results]
    assert [c for c in codes[:200] if c != 200] == [], codes
    assert [c for c in codes[200:] if c != 204] == [], codes
    for (_uid, digest), (_, doc) in zip(completes, results):
        assert doc["status"] == "completed" and doc["md5"] == digest
    for uid, _ in deletes:
        assert (await api.json("GET", f"/upload/{uid}/status"))[0] == 404
    # Every change and its event committed together, none lost or doubled.
    counts = await runtime.store.count_by_status()
    assert counts.get("completed") == 200 and counts.get("in_progress", 0) == 0
    completed = [e for uid, _ in completes for e in await runtime.store.events_of(uid)
                 if e.type == "upload.completed"]
    assert len(completed) == 200
