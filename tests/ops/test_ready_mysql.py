"""/readyz turns false while the MySQL database is unreachable, and true
again once it is back (a MySQL-backed app behind a TCP proxy we control)."""

from __future__ import annotations

from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from support import Api, MySQLServer
from uploader.store.mysql import parse_dsn

from support import TcpProxy

pytestmark = pytest.mark.mysql


@pytest.fixture
def mysql_database(mysql_server: MySQLServer) -> str:
    return mysql_server.create_database()


@pytest.fixture
def proxy(io_loop, mysql_database: str) -> Iterator[TcpProxy]:  # type: ignore[no-untyped-def]
    params = parse_dsn(mysql_database)
    tcp = TcpProxy(params["host"], params["port"])
    io_loop.run_sync(tcp.start)
    yield tcp
    io_loop.run_sync(tcp.stop)


@pytest.fixture
def config_overrides(proxy: TcpProxy, mysql_database: str) -> dict[str, dict[str, Any]]:
    parts = urlsplit(mysql_database)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy.port}" if credentials else f"127.0.0.1:{proxy.port}"
    return {"store": {"backend": "mysql", "mysql_dsn": urlunsplit(parts._replace(netloc=netloc)),
                      "pool_size": 2}}


async def test_readyz_follows_the_database(api: Api, proxy: TcpProxy, runtime) -> None:  # type: ignore[no-untyped-def]
    assert (await api.json("GET", "/readyz"))[0] == 200

    await proxy.stop()
    code, doc = await api.json("GET", "/readyz")
    assert code == 503
    assert doc["checks"] == {"database": "unavailable", "locks": "ok", "storage": "ok"}
    assert doc["error"]["failed"] == ["database"]
    # Metrics still answer during the outage, without the uploads gauge.
    resp = await api.call("GET", "/metrics")
    assert resp.code == 200 and b'uploader_ready_check{check="database"} 0.0' in resp.body
    assert b"uploader_uploads{" not in resp.body

    await proxy.start()
    code, doc = await api.json("GET", "/readyz")
    assert (code, doc["checks"]["database"]) == (200, "ok")
