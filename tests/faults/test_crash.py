"""SIGKILL at random points of chunk writes and merges, then restart: every
chunk answered 200 is still there, no final file is ever partial, uploads
stuck in ``merging`` return to ``in_progress``, stray .part files are gone."""

from __future__ import annotations

import hashlib
import os
import random
import socket
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


def test_kill_during_merge_never_leaves_a_partial_file(
        start_server: Callable[..., ServerProcess]) -> None:
    """The merge hashes the data file, then links it as its version's staged
    file and renames that into place: at no instant is a final name partial.
    The fold is off so the merge hashes all 384 MiB, long enough to be
    caught in ``merging``."""
    server = start_server({"storage.fsync": True, "storage.stale_part_age": 0,
                           "merge.wait_seconds": 60, "merge.incremental": False})
    chunk, count = 8 * MiB, 48
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
    while t.is_alive():
        if server.status(uid)["status"] == "merging":
            server.kill()
            caught = True
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


def test_kill_mid_write_in_place_then_resend_and_complete(
        start_server: Callable[..., ServerProcess]) -> None:
    """Issue 19: a first writer streams its chunk straight into the upload's
    data file. Killed half-way, the chunk is not recorded and not marked
    stored; after the restart the re-sent chunk (received aside, since the
    region was written once) lands whole and the upload completes."""
    server = start_server({"storage.fsync": True})
    chunk, count = MiB, 4
    data = os.urandom(chunk * count)
    uid = server.init(len(data), chunk)["upload_id"]
    for i in (0, 2, 3):
        assert server.put_chunk(uid, i, data[i * chunk:(i + 1) * chunk])[0] == 200
    claims = server.data_dir / "tmp" / uid / "claims"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = (f"PUT /upload/{uid}/chunk?index=1 HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: {chunk}\r\n\r\n").encode()
        sock.sendall(head + data[chunk:chunk + chunk // 2])
        wait_until(lambda: claims.read_bytes()[1] == 1, "chunk 1 claimed and being written")
        server.kill()
    server.start()
    assert server.status(uid)["received"] == [0, 2, 3]
    assert claims.read_bytes()[1] != 2  # never marked stored
    assert server.put_chunk(uid, 1, data[chunk:2 * chunk])[0] == 200
    code, done = server.complete(uid, md5(data))
    assert code == 200 and done["md5"] == md5(data)
