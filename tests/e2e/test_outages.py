"""MariaDB or Redis goes away under a running server and comes back: the
server answers 503 ``unavailable`` with Retry-After meanwhile (never a 500
traceback, never a merge or chunk commit without the lock) and recovers
without a restart.

The machine's MariaDB and Redis are shared and must stay up, so the fault is
made on the network path instead: the server reaches them through a TcpProxy
that the test cuts and restores (see proxy.py; every byte is the real
service's).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Iterator

import pytest

from support import Response, ServerProcess, wait_until
from uploader.store.mysql import parse_dsn

from .helpers import REDIS_URL, Cluster, dsn_via
from .proxy import TcpProxy

pytestmark = pytest.mark.e2e

CHUNK = 64 << 10  # small: a refused PUT's body fits in the socket buffers


@pytest.fixture
def proxies() -> Iterator[list[TcpProxy]]:
    made: list[TcpProxy] = []
    yield made
    for proxy in made:
        proxy.close()


def assert_unavailable(resp: Response) -> None:
    doc = json.loads(resp.body)
    assert resp.code == 503, doc
    assert doc["error"]["code"] == "unavailable", doc
    assert int(resp.headers["Retry-After"]) >= 1


def put(instance: ServerProcess, uid: str, index: int, data: bytes) -> Response:
    return instance.call("PUT", f"/upload/{uid}/chunk?index={index}", raw=data)


def test_database_outage_is_503_then_recovers(cluster: Cluster,
                                              proxies: list[TcpProxy]) -> None:
    target = parse_dsn(cluster.dsn)
    proxy = TcpProxy(target["host"], target["port"])
    proxies.append(proxy)
    [server] = cluster.start(1, {"store.mysql_dsn": dsn_via(cluster.dsn, proxy.port)})
    parts = [os.urandom(CHUNK) for _ in range(4)]
    data_md5 = hashlib.md5(b"".join(parts)).hexdigest()
    uid = server.init(4 * CHUNK, CHUNK)["upload_id"]
    for index in (0, 1):
        assert server.put_chunk(uid, index, parts[index])[0] == 200

    proxy.cut()
    assert_unavailable(server.call("GET", f"/upload/{uid}/status"))
    assert_unavailable(put(server, uid, 2, parts[2]))
    assert_unavailable(server.call("POST", "/upload/init",
                                   {"filename": "x", "size": 1, "chunk_size": CHUNK}))
    assert_unavailable(server.call("POST", f"/upload/{uid}/complete"))
    assert_unavailable(server.call("GET", "/uploads"))
    assert server.running
    assert "Traceback" not in server.logs()

    proxy.restore()  # no restart: the pool makes new connections by itself
    assert server.status(uid)["received"] == [0, 1]
    for index in (2, 3):
        code, doc = server.put_chunk(uid, index, parts[index])
        assert code == 200, doc
    code, doc = server.complete(uid)
    assert code == 200 and doc["md5"] == data_md5, doc
    assert server.download_md5(f"/files/{uid}") == data_md5
    assert "Traceback" not in server.logs()


def test_redis_outage_refuses_complete_then_merges(cluster: Cluster,
                                                   proxies: list[TcpProxy]) -> None:
    host, _, rest = REDIS_URL.removeprefix("redis://").partition(":")
    port, _, db = rest.partition("/")
    proxy = TcpProxy(host, int(port))
    proxies.append(proxy)
    [server] = cluster.start(1, {"locks.redis_url": f"redis://127.0.0.1:{proxy.port}/{db}"})
    parts = [os.urandom(CHUNK) for _ in range(3)]
    data_md5 = hashlib.md5(b"".join(parts)).hexdigest()
    full = server.init(3 * CHUNK, CHUNK)["upload_id"]  # every chunk in: ready to complete
    partial = server.init(3 * CHUNK, CHUNK)["upload_id"]  # chunk 2 still to come
    for index in range(3):
        assert server.put_chunk(full, index, parts[index])[0] == 200
        if index < 2:
            assert server.put_chunk(partial, index, parts[index])[0] == 200

    proxy.cut()  # the chunk PUTs above left an established Redis connection to break
    assert_unavailable(server.call("POST", f"/upload/{full}/complete"))
    assert_unavailable(server.call("POST", f"/upload/{full}/complete"))
    # Never merged without the lock: no merge began, nothing was fenced.
    assert server.count_log(f"merge started {full}") == 0
    assert cluster.merge_version(full) == 0
    # A chunk is put in place under the upload's lock (so it cannot change
    # under a merge): without Redis it is refused too, and leaves nothing.
    assert_unavailable(put(server, partial, 2, parts[2]))
    assert not (cluster.data_dir / "tmp" / partial / "chunk_2").exists()
    assert server.status(full)["status"] == "in_progress"  # reads need only the database
    assert server.running and "Traceback" not in server.logs()

    proxy.restore()
    code, doc = server.complete(full)
    assert code == 200 and doc["status"] == "completed" and doc["md5"] == data_md5, doc
    assert server.count_log(f"merge started {full} version 1") == 1
    assert server.download_md5(f"/files/{full}") == data_md5
    code, doc = server.put_chunk(partial, 2, parts[2])
    assert code == 200, doc
    code, doc = server.complete(partial)
    assert code == 200 and doc["md5"] == data_md5, doc
    assert cluster.part_files() == []
    assert "Traceback" not in server.logs()


def test_server_started_during_a_database_outage_comes_up_when_it_returns(
        cluster: Cluster, proxies: list[TcpProxy]) -> None:
    target = parse_dsn(cluster.dsn)
    proxy = TcpProxy(target["host"], target["port"])
    proxies.append(proxy)
    proxy.cut()
    log_path = cluster.tmp / f"instance{len(cluster.instances) + 1}.log"

    def restore_once_waiting() -> None:
        wait_until(lambda: log_path.exists() and "waiting for the database" in log_path.read_text(),
                   "the server to say it waits for the database")
        proxy.restore()

    restorer = threading.Thread(target=restore_once_waiting)
    restorer.start()
    [server] = cluster.start(1, {"store.mysql_dsn": dsn_via(cluster.dsn, proxy.port)})
    restorer.join(30)
    assert "waiting for the database" in server.logs()
    uid = server.init(CHUNK, CHUNK)["upload_id"]
    assert server.put_chunk(uid, 0, os.urandom(CHUNK))[0] == 200


def test_cleanup_during_a_database_outage_says_so(cluster: Cluster,
                                                  proxies: list[TcpProxy]) -> None:
    target = parse_dsn(cluster.dsn)
    proxy = TcpProxy(target["host"], target["port"])
    proxies.append(proxy)
    cluster.start(1)  # creates the schema
    proxy.cut()
    via_proxy = {"store.mysql_dsn": dsn_via(cluster.dsn, proxy.port)}
    run = cluster.run("cleanup", settings=via_proxy)
    assert run.returncode == 1
    assert "unavailable: database unavailable" in run.stderr
    assert "Traceback" not in run.stderr
    proxy.restore()
    run = cluster.run("cleanup", settings=via_proxy)
    assert run.returncode == 0, run.stderr
    assert "expired 0 uploads" in run.stdout
