"""Every lifecycle transition yields exactly the expected events, in the
outbox table and on the Redis stream, each carrying the upload object as it
was after the change (issue 16 item 2). SQLite and MariaDB, real Redis."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

from support import chunks_of, md5, wait_until_async
from uploader.models import utcnow
from uploader.store.rows import ts_to_text
from uploader.store.sqlite import SQLiteStore

from .helpers import stream_events

KiB = 1 << 10
CS = 64 * KiB


def as_event_doc(upload_doc: dict[str, Any]) -> dict[str, Any]:
    """An API upload object as events carry it (without the chunk list)."""
    return {k: v for k, v in upload_doc.items() if k not in ("received", "merged_bytes")}


async def send_all(api, upload_id: str, data: bytes) -> None:
    for index, piece in enumerate(chunks_of(data, CS)):
        code, doc = await api.put_chunk(upload_id, index, piece)
        assert code == 200, doc


async def test_each_transition_yields_its_event(api, runtime, redis_sync, stream_key):
    data = os.urandom(2 * CS + 100)
    meta = {"project": "apollo", "relative_path": "a/b.bin"}

    created = await api.init(len(data), CS, metadata=meta)
    uid = created["upload_id"]
    await send_all(api, uid, data)
    code, refused = await api.complete(uid, "0" * 32)  # a whole-file MD5 mismatch
    assert code == 422, refused
    failed_status = await api.status(uid)
    code, completed = await api.complete(uid, md5(data))
    assert code == 200 and completed["status"] == "completed", completed
    completed_status = await api.status(uid)
    code, _ = await api.json("DELETE", f"/upload/{uid}")
    assert code == 204

    # A second upload left idle past the TTL and swept.
    idle = await api.init(10, CS)
    past = utcnow() - timedelta(days=30)
    stamp: Any = ts_to_text(past) if isinstance(runtime.store, SQLiteStore) else past
    await run_sql(runtime, "UPDATE uploads SET updated_at = %s WHERE upload_id = %s",
                  (stamp, idle["upload_id"]))
    report = await runtime.expirer.sweep()
    assert report.expired == [idle["upload_id"]]

    expected = {uid: ["upload.created", "upload.failed", "upload.completed", "upload.deleted"],
                idle["upload_id"]: ["upload.created", "upload.expired"]}
    # In the database: exactly these, in this order.
    stored = {u: await runtime.store.events_of(u) for u in expected}
    assert {u: [e.type for e in events] for u, events in stored.items()} == expected
    # On the stream: the same documents (at least once; here exactly once).
    await wait_until_async(lambda: len(stream_events(redis_sync, stream_key)) >= 6,
                           "six events on the stream")
    on_stream = stream_events(redis_sync, stream_key)
    by_upload: dict[str, list[dict]] = {}
    for doc in on_stream:
        by_upload.setdefault(doc["data"]["upload"]["upload_id"], []).append(doc)
    assert {u: [d["type"] for d in docs] for u, docs in by_upload.items()} == expected
    for u, events in stored.items():
        assert [json.loads(e.payload) for e in events] == by_upload[u]
    ids = [d["id"] for d in on_stream]
    assert len(set(ids)) == len(ids) and all(i.startswith("evt_") for i in ids)

    docs = by_upload[uid]
    assert all(d["data"]["owner"] == "local" for d in docs)
    # The upload object as it was after each change.
    assert docs[0]["data"]["upload"] == as_event_doc(created)
    assert docs[1]["data"]["upload"] == as_event_doc(failed_status)
    assert docs[1]["data"]["upload"]["error"]["code"] == "checksum_mismatch"
    assert docs[1]["data"]["upload"]["status"] == "in_progress"
    assert docs[2]["data"]["upload"] == as_event_doc(completed_status)
    assert docs[2]["data"]["upload"]["metadata"] == meta
    assert docs[3]["data"]["upload"]["status"] == "aborted"
    assert by_upload[idle["upload_id"]][1]["data"]["upload"]["status"] == "aborted"
    for doc in docs:  # the event's time is the change's
        assert doc["timestamp"] == doc["data"]["upload"]["updated_at"]


async def run_sql(runtime, sql: str, params: tuple) -> None:
    store = runtime.store
    if isinstance(store, SQLiteStore):
        await store._write(sql.replace("%s", "?"), params)
    else:
        await store._write(sql, params)


async def test_a_refused_change_writes_no_event(api, runtime):
    """Repeating a delete changes nothing: no second upload.deleted; an
    incomplete complete (409) is not a merge failure: no upload.failed."""
    up = await api.init(2 * CS, CS)
    code, doc = await api.complete(up["upload_id"])
    assert code == 409 and doc["error"]["code"] == "incomplete"
    assert [e.type for e in await runtime.store.events_of(up["upload_id"])] == \
        ["upload.created"]


async def test_events_disabled_writes_none(api, runtime):
    runtime.config.events.enabled = False
    up = await api.init(10, CS)
    assert await runtime.store.events_of(up["upload_id"]) == []

