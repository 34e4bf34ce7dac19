"""The merge queue across processes (merge.queue: redis) on MariaDB + Redis +
one data_dir: dedicated ``uploader worker`` processes do the merges while the
serving instances do none, and a worker killed while it holds a merge job
leaves it to another worker, which finishes it; progress reads the same on
every instance meanwhile. (Three instances completing 20 uploads through the
queue: tests/e2e/test_events_e2e.py.)"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Iterator

import pymysql
import pytest
import redis

from support import KiB, ServerProcess, wait_until
from uploader.store.mysql import parse_dsn

from .helpers import LOCK_BACKENDS, REDIS_URL, Cluster, WorkerProcess

pytestmark = pytest.mark.e2e


def queue_settings(cluster: Cluster, **extra: object) -> dict[str, object]:
    # The queue lives on locks.redis_url under locks.redis_prefix whatever the
    # lock backend: the cluster's own prefix keeps it apart from other runs.
    return {"merge.queue": "redis", "merge.workers": "external", "locks.ttl": 3,
            "locks.redis_url": REDIS_URL, "locks.redis_prefix": cluster.lock_prefix, **extra}


@pytest.fixture(params=LOCK_BACKENDS)
def any_locks_cluster(request: pytest.FixtureRequest, make_cluster: Callable[[str], Cluster],
                      redis_client: redis.Redis) -> Iterator[Cluster]:
    """A cluster per shared lock backend; the queue's Redis keys go afterwards
    (the cluster removes Redis keys only when it locks through Redis)."""
    group = make_cluster(request.param)
    yield group
    for key in redis_client.scan_iter(match=group.lock_prefix + "*"):
        redis_client.delete(key)


def send(instance: ServerProcess, data: bytes, chunk_size: int = 16 * KiB) -> str:
    uid = instance.init(len(data), chunk_size)["upload_id"]
    for index in range(0, len(data), chunk_size):
        code, doc = instance.put_chunk(uid, index // chunk_size,
                                       data[index:index + chunk_size])
        assert code == 200, doc
    return uid


def test_workers_merge_serving_instances_do_not(cluster: Cluster) -> None:
    settings = queue_settings(cluster)
    front = cluster.start(2, settings)
    worker = cluster.start_worker(settings)
    files = [os.urandom(40 * KiB + i) for i in range(6)]
    ids = []
    for i, data in enumerate(files):
        uid = send(front[i % 2], data)
        code, doc = front[(i + 1) % 2].complete(uid, hashlib.md5(data).hexdigest())
        assert code == 200 and doc["status"] == "completed", doc
        ids.append(uid)
    for i, uid in enumerate(ids):
        assert worker.count_log(rf"merge started {uid} ") == 1
        assert front[i % 2].download_md5(f"/files/{uid}") == hashlib.md5(files[i]).hexdigest()
    for instance in front:
        assert instance.count_log("merge started") == 0, instance
        assert instance.count_log("merge queue: taking jobs") == 0


def test_a_killed_workers_job_is_finished_by_another(any_locks_cluster: Cluster,
                                                     redis_client: redis.Redis) -> None:
    """Once per lock backend (Redis, MySQL named locks, etcd): the dead
    worker's upload lock must free itself for the survivor."""
    cluster = any_locks_cluster
    settings = queue_settings(cluster, **{"merge.wait_seconds": 1})
    stream = cluster.lock_prefix + "merges"  # the queue's key (uploader/redis_keys.py)
    [front] = cluster.start(1, settings)
    workers = [cluster.start_worker(settings), cluster.start_worker(settings)]
    data = os.urandom(100 * KiB)
    uid = send(front, data)

    # Hold the upload's row: the worker that takes the job gets the upload's
    # lock, then its begin_merge waits on the row, so it dies holding both.
    p = parse_dsn(cluster.dsn)
    blocker = pymysql.connect(host=p["host"], port=p["port"], user=p["user"],
                              password=p["password"], database=p["db"])
    try:
        with blocker.cursor() as cur:
            cur.execute("SELECT * FROM uploads WHERE upload_id = %s FOR UPDATE", (uid,))
        code, doc = front.complete(uid, hashlib.md5(data).hexdigest())
        assert code == 202 and doc["status"] == "merging", doc
        [pending] = wait_until(lambda: redis_client.xpending_range(stream, "mergers", "-", "+",
                                                                   10),
                               "a worker to take the job")
        holder = _by_pid(workers, pending["consumer"].decode())
        wait_until(lambda: cluster.sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE INFO LIKE 'UPDATE uploads SET status = ''merging''%%'")[0][0] >= 1,
            "the merge to wait for the row")
        # Seen from the instance that does not merge: merging, 0 bytes so far.
        status = front.status(uid)
        assert status["status"] == "merging" and status["merged_bytes"] == 0, status
        holder.kill()
    finally:
        blocker.rollback()
        blocker.close()

    survivor = next(w for w in workers if w is not holder)
    survivor.wait_log(r"took over job", timeout=60)
    done = front.wait_status(uid, "completed")
    assert done["md5"] == hashlib.md5(data).hexdigest()
    assert front.download_md5(f"/files/{uid}") == hashlib.md5(data).hexdigest()
    assert survivor.count_log(rf"merge started {uid} ") == 1
    assert holder.count_log(rf"merge started {uid} ") == 0  # it never got past the row
    wait_until(lambda: redis_client.xlen(stream) == 0, "the job to leave the queue")
    assert cluster.sql("SELECT COUNT(*) FROM events WHERE upload_id = %s "
                       "AND type = 'upload.completed'", (uid,)) == [(1,)]


def _by_pid(workers: list[WorkerProcess], consumer: str) -> WorkerProcess:
    """The worker whose consumer name (host-pid-random) this is."""
    [worker] = [w for w in workers if f"-{w.pid}-" in consumer]
    return worker
