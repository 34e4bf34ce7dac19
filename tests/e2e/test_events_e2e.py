"""Events across crashes and instances, with real server processes on
MariaDB and Redis (issue 16 item 2):

- SIGKILL between the committed change and its delivery: after a restart the
  event is delivered; a change whose transaction died with the process
  (rolled back) never yields an event;
- three instances completing 20 uploads at once: each upload.completed is on
  the stream at least once, each file merged once, whether each merge runs
  where its complete landed or goes through the merge queue (issue 16 item 4).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql
import pytest
import redis

from support import KiB, ServerProcess, free_port, wait_until
from uploader.store.mysql import parse_dsn

from .helpers import REDIS_URL, Cluster

pytestmark = pytest.mark.e2e


def stream_docs(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    return [json.loads(fields[b"event"]) for _, fields in client.xrange(key)]


def upload_file(instance: ServerProcess, data: bytes, chunk_size: int) -> str:
    up = instance.init(len(data), chunk_size)
    for index in range(0, (len(data) + chunk_size - 1) // chunk_size):
        code, doc = instance.put_chunk(up["upload_id"], index,
                                       data[index * chunk_size:(index + 1) * chunk_size])
        assert code == 200, doc
    return up["upload_id"]


@pytest.fixture
def stream(cluster: Cluster, redis_client: redis.Redis) -> str:
    return cluster.lock_prefix + "events"  # removed with the cluster's keys


def test_sigkill_between_commit_and_delivery(cluster: Cluster, redis_client: redis.Redis,
                                             stream: str) -> None:
    # The stream's Redis is unreachable at first: events stay in the outbox.
    dead = f"redis://127.0.0.1:{free_port()}/13"
    settings = {"events.stream": stream, "events.claim_ttl": 2, "events.poll_interval": 0.1}
    [server] = cluster.start(1, {"events.redis_url": dead, **settings})
    data = os.urandom(20 * KiB)
    uid = upload_file(server, data, 8 * KiB)
    code, done = server.json("POST", f"/upload/{uid}/complete",
                                {"md5": hashlib.md5(data).hexdigest()})
    assert code == 200, done
    rows = cluster.sql("SELECT type, dispatched_at FROM events WHERE upload_id = %s "
                       "ORDER BY seq", (uid,))
    assert rows == [("upload.created", None), ("upload.completed", None)]
    server.wait_log("could not publish")  # it tried, and holds them leased

    # A delete whose transaction is cut by the kill: the status change is
    # applied, its event insert waits behind a table lock held here.
    p = parse_dsn(cluster.dsn)
    blocker = pymysql.connect(host=p["host"], port=p["port"], user=p["user"],
                              password=p["password"], database=p["db"], autocommit=True)
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLES events WRITE")
        answered: list[Any] = []
        deleting = threading.Thread(
            target=lambda: answered.append(_try(lambda: server.call(
                "DELETE", f"/upload/{uid}", timeout=60))), daemon=True)
        deleting.start()
        wait_until(lambda: cluster.sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE INFO LIKE 'INSERT INTO events%%'")[0][0] >= 1,
            "the delete's event insert to wait for the lock")
        server.kill()  # SIGKILL: no cleanup, the transaction dies with the session
        deleting.join(60)
        assert answered and isinstance(answered[0], Exception)  # never answered 204
        with blocker.cursor() as cur:
            cur.execute("UNLOCK TABLES")
    finally:
        blocker.close()
    wait_until(lambda: cluster.sql(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
        "WHERE INFO LIKE 'INSERT INTO events%%'")[0][0] == 0, "the cut session to end")
    assert cluster.sql("SELECT status FROM uploads WHERE upload_id = %s", (uid,)) == \
        [("completed",)]  # rolled back

    server.settings["events.redis_url"] = REDIS_URL
    server.start()
    docs = wait_until(lambda: len(d := stream_docs(redis_client, stream)) >= 2 and d,
                      "the events on the stream after the restart")
    assert [d["type"] for d in docs] == ["upload.created", "upload.completed"]
    ids = [r[0] for r in cluster.sql("SELECT event_id FROM events WHERE upload_id = %s "
                                     "ORDER BY seq", (uid,))]
    assert [d["id"] for d in docs] == ids
    assert docs[1]["data"]["upload"]["status"] == "completed"
    wait_until(lambda: cluster.sql("SELECT COUNT(*) FROM events WHERE dispatched_at IS NULL")
               == [(0,)], "the outbox to be recorded empty")
    # The rolled-back delete left no event anywhere, and the file is intact.
    assert "upload.deleted" not in [r[0] for r in cluster.sql("SELECT type FROM events")]
    assert server.download_md5(f"/files/{uid}") == hashlib.md5(data).hexdigest()


def _try(call: Any) -> Any:
    try:
        return call()
    except Exception as exc:  # the connection died with the server
        return exc


@pytest.mark.parametrize("queue", ["memory", "redis"])
def test_three_instances_twenty_uploads(cluster: Cluster, redis_client: redis.Redis,
                                        stream: str, queue: str) -> None:
    """memory: each merge runs where its complete landed; redis: complete
    queues a job that any of the three takes (merge.workers embedded)."""
    instances = cluster.start(3, {"events.redis_url": REDIS_URL, "events.stream": stream,
                                  "events.poll_interval": 0.2, "merge.queue": queue})
    files = [os.urandom(24 * KiB + i) for i in range(20)]

    def one(i: int) -> str:
        # Chunks and complete spread over the instances.
        owner = instances[i % 3]
        uid = upload_file(owner, files[i], 8 * KiB)
        code, doc = instances[(i + 1) % 3].json(
            "POST", f"/upload/{uid}/complete", {"md5": hashlib.md5(files[i]).hexdigest()})
        assert code in (200, 202), doc
        return uid

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(one, range(20)))
    for i, uid in enumerate(ids):
        instances[i % 3].wait_status(uid, "completed")
    completed = wait_until(
        lambda: (seen := {d["data"]["upload"]["upload_id"] for d in
                          stream_docs(redis_client, stream)
                          if d["type"] == "upload.completed"}) >= set(ids) and seen,
        "upload.completed of every upload on the stream", 60)
    assert completed == set(ids)
    for i, uid in enumerate(ids):
        merges = sum(inst.count_log(rf"merge started {uid} ") for inst in instances)
        assert merges == 1, (uid, merges)
        assert instances[2 - i % 3].download_md5(f"/files/{uid}") == \
            hashlib.md5(files[i]).hexdigest()
