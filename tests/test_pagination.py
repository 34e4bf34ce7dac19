"""GET /uploads in pages (issue 21.3): limit, the opaque cursor, next_cursor,
newest first, stable while uploads are created and deleted between pages,
filters and owner isolation combined with it; on SQLite and MariaDB, and the
query plans use an index range at any table size."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import pytest

from support import Api, MySQLServer
from uploader.store.rows import ts_to_text
from uploader.store.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite", "mysql"])
def config_overrides(request) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return {}
    server: MySQLServer = request.getfixturevalue("mysql_server")
    return {"store": {"backend": "mysql", "mysql_dsn": server.create_database(),
                      "pool_size": 4}}


async def make(api: Api, count: int, **kw: Any) -> list[str]:
    """``count`` uploads, oldest first."""
    return [(await api.init(1024, 1024, **kw))["upload_id"] for _ in range(count)]


async def page(api: Api, query: str, code: int = 200) -> dict[str, Any]:
    got, doc = await api.json("GET", "/uploads" + query)
    assert got == code, doc
    return doc


async def all_pages(api: Api, query: str) -> tuple[list[str], int]:
    ids: list[str] = []
    pages = 0
    cursor = None
    while True:
        sep = "&" if "?" in query else "?"
        doc = await page(api, query + (f"{sep}cursor={cursor}" if cursor else ""))
        pages += 1
        ids += [u["upload_id"] for u in doc["uploads"]]
        cursor = doc.get("next_cursor")
        if cursor is None:
            return ids, pages


async def test_pages_newest_first_with_next_cursor_absent_on_the_last(api: Api) -> None:
    ids = await make(api, 7)
    first = await page(api, "?limit=3")
    assert [u["upload_id"] for u in first["uploads"]] == ids[::-1][:3]
    assert isinstance(first["next_cursor"], str)
    listed, pages = await all_pages(api, "?limit=3")
    assert listed == ids[::-1] and pages == 3
    # Exactly a page's worth: no empty page after it.
    listed, pages = await all_pages(api, "?limit=7")
    assert listed == ids[::-1] and pages == 1
    assert "next_cursor" not in await page(api, "")  # default limit 100 > 7


async def test_default_limit_is_100(api: Api) -> None:
    await make(api, 101)
    doc = await page(api, "")
    assert len(doc["uploads"]) == 100 and "next_cursor" in doc
    rest = await page(api, "?cursor=" + doc["next_cursor"])
    assert len(rest["uploads"]) == 1 and "next_cursor" not in rest


async def test_stable_while_uploads_are_created_and_deleted_between_pages(api: Api) -> None:
    ids = await make(api, 12)
    newest_first = ids[::-1]
    doc = await page(api, "?limit=4")
    seen = [u["upload_id"] for u in doc["uploads"]]
    assert seen == newest_first[:4]
    # Between pages: new uploads arrive, one already listed and two not yet
    # listed are deleted.
    await make(api, 5)
    for gone in (newest_first[1], newest_first[5], newest_first[9]):
        assert (await api.call("DELETE", f"/upload/{gone}")).code == 204
    cursor = doc["next_cursor"]
    while cursor:
        doc = await page(api, f"?limit=4&cursor={cursor}")
        seen += [u["upload_id"] for u in doc["uploads"]]
        cursor = doc.get("next_cursor")
    survivors = [i for i in newest_first if i not in (newest_first[5], newest_first[9])]
    # Every upload that existed throughout, once, in order; nothing newer.
    assert seen == survivors


async def test_uploads_created_in_the_same_microsecond_are_neither_skipped_nor_repeated(
        api: Api, runtime) -> None:
    ids = await make(api, 9)
    # Same created_at for all: the order falls back to upload_id. Written
    # through the store's own connection (an SQLite writer of its own would
    # wait on the server's).
    store = runtime.store
    stamp: Any = datetime(2026, 1, 1)
    if isinstance(store, SQLiteStore):
        stamp = ts_to_text(stamp)
    await store._write(f"UPDATE uploads SET created_at = {store.MARK}", (stamp,))
    listed, pages = await all_pages(api, "?limit=2")
    assert listed == sorted(ids, reverse=True) and pages == 5


async def test_filters_combine_with_pages(api: Api) -> None:
    a = await make(api, 5, filename="a.bin")
    b = await make(api, 4, filename="b.bin")
    done = b[0]
    assert (await api.put_chunk(done, 0, b"x" * 1024))[0] == 200
    assert (await api.complete(done))[0] == 200
    aborted = a[1]
    assert (await api.call("DELETE", f"/upload/{aborted}")).code == 204

    listed, _ = await all_pages(api, "?filename=a.bin&limit=2")
    assert listed == [i for i in a[::-1] if i != aborted]
    listed, _ = await all_pages(api, "?status=in_progress&limit=2")
    assert listed == [i for i in (a + b)[::-1] if i not in (done, aborted)]
    # Two statuses: one ordered stream over both.
    listed, pages = await all_pages(api, "?status=completed,in_progress&limit=3")
    assert listed == [i for i in (a + b)[::-1] if i != aborted] and pages == 3
    listed, _ = await all_pages(api, "?status=completed&filename=b.bin&limit=1")
    assert listed == [done]


async def test_other_owners_uploads_are_not_paged(api: Api, runtime) -> None:
    mine = await make(api, 3)
    other = await runtime.service.create("someone-else", filename="x.bin", size=1, chunk_size=1024)
    listed, _ = await all_pages(api, "?limit=1")
    assert listed == mine[::-1] and other.upload_id not in listed
    # A cursor made from another owner's upload pages only the caller's rows.
    doc = await page(api, "?limit=1")
    assert doc["uploads"][0]["upload_id"] == mine[-1]


def forged(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("cursor", [
    "garbage!", "%00", "AAAA", "e30", "x" * 300,
    forged({"v": 2, "c": "2026-01-01T00:00:00.000000", "i": "0" * 32}),
    forged({"v": 1, "c": "yesterday", "i": "0" * 32}),
    forged({"v": 1, "c": "2026-01-01T00:00:00.000000", "i": "../../etc"}),
    forged({"v": 1, "c": "2026-01-01T00:00:00.000000", "i": "0" * 32, "x": 1}),
    forged({"v": True, "c": "2026-01-01T00:00:00.000000", "i": "0" * 32}),
    forged([1, 2, 3]),  # type: ignore[arg-type]
])
async def test_bad_cursor_is_400(api: Api, cursor: str) -> None:
    await make(api, 2)
    err = await page(api, f"?cursor={cursor}", code=400)
    assert err["error"]["code"] == "invalid_request" and "cursor" in err["error"]["message"]


async def test_tampered_cursor_is_400(api: Api) -> None:
    await make(api, 3)
    cursor = (await page(api, "?limit=1"))["next_cursor"]
    flipped = cursor[:5] + ("A" if cursor[5] != "A" else "B") + cursor[6:]
    err = await page(api, f"?cursor={flipped}", code=400)
    assert err["error"]["code"] == "invalid_request"
    assert (await page(api, f"?cursor={cursor}"))["uploads"]  # the real one still works


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "abc", "1.5", "%EF%BC%91", ""])
async def test_limit_out_of_bounds_is_400(api: Api, limit: str) -> None:
    err = await page(api, f"?limit={limit}", code=400)
    assert err["error"]["code"] == "invalid_request" and err["error"]["max_limit"] == 1000


async def test_limit_bounds_accepted(api: Api) -> None:
    ids = await make(api, 3)
    assert [u["upload_id"] for u in (await page(api, "?limit=1"))["uploads"]] == [ids[-1]]
    doc = await page(api, "?limit=1000")
    assert len(doc["uploads"]) == 3 and "next_cursor" not in doc
    assert (await page(api, "?limit=1&limit=2", code=400))["error"]["code"] == "invalid_request"


async def bulk_rows(store: Any, count: int) -> None:
    """Rows of many owners straight into the table (the optimizer picks its
    plan by the table's size), then fresh statistics."""
    m = store.MARK
    text = isinstance(store, SQLiteStore)
    rows = []
    for n in range(count):
        ts: Any = datetime(2026, 1, 1, 0, 0, n % 60, n)
        ts = ts_to_text(ts) if text else ts
        rows.append((f"{n:032x}", f"owner{n % 50}" if n % 10 else "local", "f.bin", 1, 1, 1,
                     "in_progress" if n % 3 else "completed", ts, ts))
    sql = (f"INSERT INTO uploads (upload_id, owner, filename, total_size, chunk_size, "
           f"total_chunks, status, created_at, updated_at) VALUES "
           f"({','.join([m] * 9)})")
    if text:
        async with store._transaction() as db:
            await db.executemany(sql, rows)
            await db.execute("ANALYZE")
    else:
        async def work(cur: Any) -> None:
            await cur.executemany(sql, rows)
            await cur.execute("ANALYZE TABLE uploads")
            await cur.fetchall()
        await store._run(work)


async def explain(store: Any, status: str | None, before: Any) -> str:
    sql, params = store._list_sql("local", status, None, 101, None, before)
    if isinstance(store, SQLiteStore):
        rows = await store._all("EXPLAIN QUERY PLAN " + sql, params)
        return " | ".join(str(r[-1]) for r in rows)
    rows = await store._all("EXPLAIN " + sql, params)
    return " | ".join(f"type={r[3]} key={r[5]} extra={r[9]}" for r in rows)


@pytest.mark.parametrize("status", [None, "in_progress"])
async def test_a_page_is_an_index_range_without_a_sort(api: Api, runtime,
                                                       status: str | None) -> None:
    """The plan, not a timing: a page reads an index range in order (no sort
    of the owner's rows), so its cost does not grow with the table."""
    store = runtime.store
    await bulk_rows(store, 20_000)
    before = (datetime(2026, 1, 1, 0, 0, 30), "8" * 32)  # a cursor mid-table
    plan = await explain(store, status, before)
    index = "uploads_owner_status_created" if status else "uploads_owner_created"
    assert index in plan
    assert "TEMP B-TREE" not in plan and "filesort" not in plan
    # A range from the cursor on, not the owner's rows read from the newest.
    assert ("type=range" if not isinstance(store, SQLiteStore) else "created_at<") in plan
