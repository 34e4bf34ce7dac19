"""A merger frozen (SIGSTOP) past its lock TTL while another instance takes
over: the merge_version fence refuses its late result, and it touches neither
the final file nor the new owner's work."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from support import MiB, file_md5, wait_until
from uploader.locks.names import upload_lock

from .helpers import Cluster

pytestmark = pytest.mark.e2e

# Big enough that the merge (MD5 + copy + fsync) lasts well beyond the time the
# test needs to see "merge started" in the log and stop the process.
CHUNK, CHUNKS = 16 * MiB, 16
LOCK_TTL = 2


def generate(path: Path) -> tuple[str, int]:
    """The test file, written under tmp at run time."""
    digest = hashlib.md5()
    with open(path, "wb") as f:
        for _ in range(CHUNKS):
            piece = os.urandom(CHUNK)
            digest.update(piece)
            f.write(piece)
    return digest.hexdigest(), CHUNK * CHUNKS


def test_paused_merger_is_fenced_out(shared_cluster: Cluster, tmp_path: Path) -> None:
    """Once per shared lock backend: the frozen merger's lock frees by its ttl
    (Redis key expiry, MySQL session wait_timeout, etcd lease), and the fence
    does the rest."""
    cluster = shared_cluster
    # fsync on: the merge includes flushing the file, which keeps it long
    # enough to be caught; merge.wait_seconds 0: complete answers 202 at once.
    a, b = cluster.start(2, {"locks.ttl": LOCK_TTL, "storage.fsync": True,
                             "merge.wait_seconds": 0})
    source = tmp_path / "source.bin"
    data_md5, size = generate(source)
    uid = a.init(size, CHUNK, md5=data_md5)["upload_id"]
    with open(source, "rb") as f:
        for index in range(CHUNKS):
            code, doc = (a, b)[index % 2].put_chunk(uid, index, f.read(CHUNK))
            assert code == 200, doc

    code, doc = a.complete(uid)
    assert code == 202 and doc["status"] == "merging", doc
    a.wait_log(rf"merge started {uid} version 1")
    a.pause()
    stopped = time.monotonic()
    # Caught mid-merge? If not, the file is too small for this machine's disk.
    status = b.status(uid)
    assert status["status"] == "merging" and a.count_log(f"merge finished {uid}") == 0, \
        "the merge finished before SIGSTOP landed: make the test file bigger"

    wait_until(lambda: not cluster.lock_held(upload_lock(uid)),
               "the frozen merger's lock to expire", timeout=10 * LOCK_TTL)
    expired_after = time.monotonic() - stopped

    code, doc = b.complete(uid)  # the new owner: takes the lock, version 2
    assert code in (200, 202), doc
    b.wait_status(uid, "completed", timeout=120)
    b.wait_log(rf"merge finished {uid} version 2")
    assert cluster.merge_version(uid) == 2
    final = cluster.stored_file(uid)
    assert file_md5(final) == data_md5
    final_inode = final.stat().st_ino

    a.resume()  # the stale merger wakes up and finishes
    a.wait_log(rf"merge superseded {uid} version 1", timeout=120)
    resumed_for = time.monotonic() - stopped

    assert final.stat().st_ino == final_inode  # not replaced by the stale merger
    assert file_md5(final) == data_md5
    doc = a.status(uid)
    assert doc["status"] == "completed" and doc["md5"] == data_md5
    assert cluster.merge_version(uid) == 2
    assert a.count_log(f"merge finished {uid}") == 0
    assert a.count_log(f"merge started {uid}") == 1 and b.count_log(f"merge started {uid}") == 1
    assert cluster.part_files() == []
    assert not (cluster.data_dir / "tmp" / uid).exists()
    assert a.download_md5(f"/files/{uid}") == data_md5
    print(f"\n[stale merger, {cluster.lock_backend} locks] {size // MiB} MiB; "
          f"lock gone {expired_after:.2f}s after "
          f"SIGSTOP (ttl {LOCK_TTL}s); version 2 completed, stale version 1 refused "
          f"{resumed_for:.2f}s after SIGSTOP")
