"""SIGKILL at random points of chunk writes and merges, then restart: every
chunk answered 200 is still there, no final file is ever partial, uploads
stuck in ``merging`` return to ``in_progress``, stray .part files are gone."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from typing import Callable

import pytest

from support import MiB, ServerProcess, md5, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server({"storage.fsync": True, "storage.stale_part_age": 0,
                         "merge.wait_seconds": 60})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_during_chunk_writes(server: ServerProcess, seed: int) -> None:
    rng = random.Random(seed)
    chunk, count = MiB, 24
    data = rng.randbytes(chunk * count)
    uid = server.init(len(data), chunk)["upload_id"]
    acknowledged: set[int] = set()
    kill_after = rng.randrange(3, count - 3)
    order = list(range(count))
    rng.shuffle(order)
    stop = threading.Event()

    def sender(indices: list[int]) -> None:
        for i in indices:
            if stop.is_set():
                return
            try:
                code, _ = server.put_chunk(uid, i, data[i * chunk:(i + 1) * chunk],
                                           timeout=10)
            except OSError:
                return  # the server died under us: not acknowledged
            if code == 200:
                acknowledged.add(i)
                if len(acknowledged) >= kill_after:
                    stop.set()

    threads = [threading.Thread(target=sender, args=(order[k::3],)) for k in range(3)]
    for t in threads:
        t.start()
    stop.wait(60)
    server.kill()  # other senders are mid-chunk right now
    for t in threads:
        t.join(30)
    server.start()
    status = server.status(uid)
    assert acknowledged <= set(status["received"]), "an acknowledged chunk was lost"
    assert list(server.data_dir.rglob("*.part")) == []
    for i in range(count):
        if i not in status["received"]:
            code, _ = server.put_chunk(uid, i, data[i * chunk:(i + 1) * chunk])
            assert code == 200
    code, done = server.complete(uid, md5(data))
    assert code == 200, done
    assert done["md5"] == md5(data)


def test_kill_during_merge_never_leaves_a_partial_file(server: ServerProcess) -> None:
    chunk, count = 8 * MiB, 48  # 384 MiB: a merge long enough to be caught
    data = os.urandom(chunk * count)
    uid = server.init(len(data), chunk)["upload_id"]
    for i in range(count):
        code, _ = server.put_chunk(uid, i, data[i * chunk:(i + 1) * chunk])
        assert code == 200
    store = server.data_dir / "store"
    result: dict[str, object] = {}

    def complete() -> None:
        try:
            result["answer"] = server.complete(uid)
        except OSError as exc:
            result["error"] = exc

    t = threading.Thread(target=complete)
    t.start()
    caught = False
    for _ in range(2_000_000):  # bounded: until the merge's .part appears or it is done
        if any(p.name.endswith(".part") for p in store.iterdir()):
            server.kill()
            caught = True
            break
        if not t.is_alive():
            break
    t.join(60)
    finals = [p for p in store.iterdir() if not p.name.endswith(".part")]
    if caught:
        # Killed mid-merge: the final name must not exist with partial content.
        for p in finals:
            assert hashlib.md5(p.read_bytes()).hexdigest() == md5(data)
        server.start()
        status = server.status(uid)
        assert status["status"] in ("in_progress", "completed")
        assert list(server.data_dir.rglob("*.part")) == []
    code, done = server.complete(uid)
    assert code == 200 and done["md5"] == md5(data)
    [final] = [p for p in store.iterdir()]
    assert hashlib.md5(final.read_bytes()).hexdigest() == md5(data)
    assert caught, "the merge finished before the kill: make the file larger"


def test_fold_file_of_a_killed_process_goes_at_start(
        start_server: Callable[..., ServerProcess]) -> None:
    """Issue 13.13: the incremental fold lives in one process's memory; after
    a crash its file (as large as the upload so far) stayed on disk until
    storage.stale_part_age (1 h). At start no fold of a dead process can be
    used again: recovery removes it."""
    server = start_server({"storage.fsync": True})  # stale_part_age: the default hour
    chunk, count = MiB, 8
    data = os.urandom(chunk * count)
    uid = server.init(len(data), chunk)["upload_id"]
    for i in range(4):
        assert server.put_chunk(uid, i, data[i * chunk:(i + 1) * chunk])[0] == 200
    store = server.data_dir / "store"

    def folded() -> list[str]:
        return [p.name for p in store.iterdir()
                if ".inc-" in p.name and p.stat().st_size == 4 * chunk]

    wait_until(folded, "the first four chunks folded")
    server.kill()
    server.start()
    assert list(server.data_dir.rglob("*.part")) == []
    for i in range(4, count):
        assert server.put_chunk(uid, i, data[i * chunk:(i + 1) * chunk])[0] == 200
    code, done = server.complete(uid, md5(data))
    assert code == 200 and done["md5"] == md5(data)
