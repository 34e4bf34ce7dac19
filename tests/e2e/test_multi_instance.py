"""Three server processes behind no balancer at all: the client spreads one
upload's chunks over all of them and completes on all three at once."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from support import MiB, ServerProcess, file_md5
from uploader.store.schema import MYSQL_STEPS

from .helpers import Cluster

pytestmark = pytest.mark.e2e

LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"


def log_time(instance: ServerProcess, pattern: str) -> datetime:
    match = instance.wait_log(r"(\S+ \S+) INFO \S+ " + pattern)
    return datetime.strptime(match.group(1) + "000", LOG_TIME)


def test_three_instances_start_at_once_on_a_fresh_database(cluster: Cluster) -> None:
    """Each runs the schema migration at start; GET_LOCK serialises them."""
    instances = cluster.start(3)
    # Every step applied exactly once, whoever applied it.
    steps = [(n,) for n in range(1, len(MYSQL_STEPS) + 1)]
    assert sorted(cluster.sql("SELECT version FROM schema_version")) == steps
    for instance in instances:
        up = instance.init(5, 4096)
        assert up["status"] == "in_progress"
        assert "Traceback" not in instance.logs()


def test_round_robin_chunks_and_simultaneous_complete_merge_once(shared_cluster: Cluster
                                                                 ) -> None:
    """Once per shared lock backend: one merge, whoever got the lock."""
    cluster = shared_cluster
    instances = cluster.start(3)
    chunk_size = MiB
    chunks = [os.urandom(chunk_size) for _ in range(24)] + [os.urandom(12345)]
    data_md5 = hashlib.md5(b"".join(chunks)).hexdigest()
    size = sum(map(len, chunks))
    up = instances[0].init(size, chunk_size)
    uid = up["upload_id"]

    started = time.monotonic()

    def send(index: int) -> None:
        code, doc = instances[index % 3].put_chunk(uid, index, chunks[index])
        assert code == 200, doc

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(send, range(len(chunks))))
    upload_seconds = time.monotonic() - started
    for instance in instances:  # every instance sees every chunk
        assert instance.status(uid)["received"] == list(range(len(chunks)))

    barrier = threading.Barrier(3)
    answers: list[tuple[str, int, dict, float]] = []

    def complete(instance: ServerProcess) -> None:
        barrier.wait()
        t0 = time.monotonic()
        code, doc = instance.complete(uid)
        answers.append((instance.name, code, doc, time.monotonic() - t0))

    threads = [threading.Thread(target=complete, args=(i,)) for i in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == 3, answers
    for name, code, doc, _ in answers:
        assert code in (200, 202), (name, doc)
        if code == 202:  # merge outlived merge.wait_seconds: follow the status
            doc = next(i for i in instances if i.name == name).wait_status(uid, "completed")
        assert doc["status"] == "completed" and doc["md5"] == data_md5, (name, doc)

    merges = sum(i.count_log(rf"merge started {uid} version \d+") for i in instances)
    [merger] = [i for i in instances if i.count_log(rf"merge started {uid}")]
    merge_seconds = (log_time(merger, f"merge finished {uid}")
                     - log_time(merger, f"merge started {uid}")).total_seconds()
    assert merges == 1
    assert cluster.merge_version(uid) == 1
    assert file_md5(cluster.stored_file(uid)) == data_md5
    for instance in instances:
        assert instance.status(uid)["status"] == "completed"
        assert instance.download_md5(f"/files/{uid}") == data_md5
    assert cluster.part_files() == []
    assert not (cluster.data_dir / "tmp" / uid).exists()
    print(f"\n[multi-instance, {cluster.lock_backend} locks] {size / MiB:.1f} MiB in "
          f"{len(chunks)} chunks round-robin over "
          f"3 instances: upload {upload_seconds:.2f}s; merges counted in the logs: {merges} "
          f"(by {merger.name}), merge_version {cluster.merge_version(uid)}; merge "
          f"{merge_seconds:.3f}s; complete answered: "
          + ", ".join(f"{n} {c} in {s:.3f}s" for n, c, _, s in sorted(answers)))
