"""Fixtures for the metadata store tests: every test gets an open store of
each backend (SQLite in a temp dir; MySQL in a database created for this test
session), built on the test's own IOLoop."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from support import MySQLServer
from uploader.store.mysql import MySQLStore, parse_dsn
from uploader.store.sqlite import SQLiteStore


@pytest.fixture(scope="session")
def mysql_dsn(mysql_server: MySQLServer) -> str:
    """The DSN of this session's database (schema created by the first store)."""
    return mysql_server.create_database()


def _clear_mysql(mysql_server: MySQLServer, dsn: str) -> None:
    with mysql_server.admin() as conn, conn.cursor() as cur:
        database = parse_dsn(dsn)["db"]
        cur.execute(f"DELETE FROM `{database}`.upload_chunks")
        cur.execute(f"DELETE FROM `{database}`.upload_metadata")
        cur.execute(f"DELETE FROM `{database}`.event_deliveries")
        cur.execute(f"DELETE FROM `{database}`.events")
        cur.execute(f"DELETE FROM `{database}`.uploads")


@pytest.fixture
def mysql_store(request, io_loop, mysql_server: MySQLServer, mysql_dsn: str) -> Iterator[MySQLStore]:
    store = MySQLStore(mysql_dsn, pool_size=4)
    io_loop.run_sync(store.open)
    # One database per session: empty the tables so each test starts clean.
    _clear_mysql(mysql_server, mysql_dsn)
    yield store
    io_loop.run_sync(store.close)


@pytest.fixture(params=["sqlite", "mysql"])
def store(request, io_loop, tmp_path):
    """An open, empty store of each backend."""
    if request.param == "sqlite":
        sqlite = SQLiteStore(tmp_path / "meta.db")
        io_loop.run_sync(sqlite.open)
        yield sqlite
        io_loop.run_sync(sqlite.close)
    else:
        yield request.getfixturevalue("mysql_store")


def _fresh_stores(request, io_loop, tmp_path, kind: str) -> Iterator[Callable[[], object]]:
    made: list = []
    if kind == "sqlite":
        path = tmp_path / "fresh.db"

        def make():
            made.append(SQLiteStore(path))
            return made[-1]
    else:
        dsn = request.getfixturevalue("mysql_server").create_database()

        def make():
            made.append(MySQLStore(dsn, pool_size=2))
            return made[-1]
    yield make

    async def close_all() -> None:
        for s in made:
            await s.close()
    io_loop.run_sync(close_all)


@pytest.fixture(params=["sqlite", "mysql"])
def fresh_store_factory(request, io_loop, tmp_path) -> Iterator[Callable[[], object]]:
    """Makes unopened stores that all point at one fresh, empty database."""
    yield from _fresh_stores(request, io_loop, tmp_path, request.param)


@pytest.fixture
def fresh_mysql_store_factory(request, io_loop, tmp_path) -> Iterator[Callable[[], object]]:
    """MySQL only: SQLiteStore.open() can fail with "database is locked" when
    two open a new file at the very same moment (PRAGMA journal_mode=WAL does
    not wait for the busy timeout); the server opens SQLite once per process."""
    yield from _fresh_stores(request, io_loop, tmp_path, "mysql")
