"""Issue 21.1: no request scans what grows with the uploads in the database.
Every statement the server runs for init, chunk PUT, status, list (with its
filters), complete and delete is captured as it runs over real HTTP, then
explained by the database itself (SQLite ``EXPLAIN QUERY PLAN``, MariaDB
``EXPLAIN``): each table is reached through an index, and the list is read
in index order (no sort of all of an owner's uploads). The plans are printed
(``pytest -s``) for docs/architecture.md."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiomysql
import pytest

from support import KiB, Api, MySQLServer, md5
from uploader.store.sqlite import SQLiteStore

# Tables whose size follows the uploads (events are pruned by age, but
# hold a week of them).
GROWING = {"uploads", "upload_chunks", "upload_metadata", "events", "event_deliveries",
           "upload_counts"}


@pytest.fixture(params=["sqlite", "mysql"])
def config_overrides(request, mysql_server: MySQLServer):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return {}
    return {"store": {"backend": "mysql", "mysql_dsn": mysql_server.create_database()}}


async def one_of_each(api: Api) -> None:
    """Every request of an upload's life, and the list with each filter."""
    data = b"x" * 2 * KiB
    up = await api.init(len(data), KiB, metadata={"project": "apollo"})
    uid = up["upload_id"]
    for index in (0, 1):
        assert (await api.put_chunk(uid, index, data[:KiB], md5(data[:KiB])))[0] == 200
    await api.status(uid)
    for query in ("", "?status=in_progress", "?filename=f.bin", "?metadata.project=apollo"):
        assert (await api.json("GET", f"/uploads{query}"))[0] == 200
    assert (await api.complete(uid))[0] == 200
    other = await api.init(KiB, KiB)
    assert (await api.json("DELETE", f"/upload/{other['upload_id']}"))[0] == 204
    assert (await api.json("DELETE", f"/upload/{uid}"))[0] == 204


# Not a request's: the dispatcher prunes finished webhook deliveries every
# 5 minutes (events/dispatcher.py), one statement, in the background.
BACKGROUND = ("DELETE FROM event_deliveries WHERE state != 'pending'",)


def worth_explaining(sql: str) -> bool:
    if sql.startswith(BACKGROUND):
        return False
    head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    return head in ("SELECT", "UPDATE", "DELETE", "INSERT") and bool(
        re.search(r"\b(FROM|UPDATE|JOIN)\s+(" + "|".join(GROWING) + r")\b", sql))


async def test_request_path_uses_indexes(api: Api, runtime) -> None:
    store = runtime.store
    statements: list[str] = []
    if isinstance(store, SQLiteStore):
        await store.db.set_trace_callback(statements.append)
        try:
            await one_of_each(api)
        finally:
            await store.db.set_trace_callback(None)
        plans = await sqlite_plans(store, statements)
    else:
        original = aiomysql.Cursor.execute

        async def recording(cur: Any, query: str, args: Any = None) -> Any:
            result = await original(cur, query, args)
            executed = cur._executed
            statements.append(executed.decode() if isinstance(executed, bytes) else executed)
            return result
        aiomysql.Cursor.execute = recording  # observes; every statement still runs
        try:
            await one_of_each(api)
        finally:
            aiomysql.Cursor.execute = original
        plans = await mysql_plans(store, [s.decode() if isinstance(s, bytes) else str(s)
                                          for s in statements])
    assert len(plans) >= 10, statements
    bad = {sql: plan for sql, plan in plans.items() if not plan_ok(sql, plan)}
    for sql, plan in plans.items():
        print(f"\n{sql}\n  -> {plan}")
    assert not bad, json.dumps(bad, indent=1)


def plan_ok(sql: str, plan: list[str]) -> bool:
    for step in plan:
        # SQLite: "SCAN t" reads the table (or a whole index) end to end.
        if re.match(r"SCAN (" + "|".join(GROWING) + r")\b", step):
            return False
        # MariaDB: type ALL (table scan) or index (whole index scan) on a
        # growing table, or a filesort of an owner's uploads.
        if re.match(r"(" + "|".join(GROWING) + r") type=(ALL|index)\b", step):
            return False
        if "USE TEMP B-TREE FOR ORDER BY" in step or "Using filesort" in step:
            return False
    return True


async def sqlite_plans(store: SQLiteStore, statements: list[str]) -> dict[str, list[str]]:
    plans: dict[str, list[str]] = {}
    for sql in dict.fromkeys(s for s in statements if worth_explaining(s)):
        rows = await store.db.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}")
        plans[sql] = [str(r[3]) for r in rows]
    return plans


async def mysql_plans(store: Any, statements: list[str]) -> dict[str, list[str]]:
    plans: dict[str, list[str]] = {}

    async def work(cur: aiomysql.Cursor) -> None:
        for sql in dict.fromkeys(s for s in statements if worth_explaining(s)):
            await cur.execute(f"EXPLAIN {sql}")
            names = [d[0] for d in cur.description]
            plans[sql] = []
            for row in await cur.fetchall():
                r = dict(zip(names, row))
                plans[sql].append(f"{r['table']} type={r['type']} key={r['key']} "
                                  f"extra={r['Extra']}")
    await store.db.run(work)
    await asyncio.sleep(0)
    return plans
