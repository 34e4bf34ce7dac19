"""The pieces of the local backend's one-data-file-per-upload layout (issue 19):
the flush barrier, the claims, the upgrade from per-chunk files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from support import wait_until
from uploader.models import IN_PROGRESS, ChunkRecord, Upload, chunk_count, utcnow
from uploader.naming import new_upload_id
from uploader.storage.datafile import FlushBarrier
from uploader.storage.local import LocalStorage

CS = 64 << 10


def new_upload(size: int, chunk_size: int = CS) -> Upload:
    now = utcnow()
    return Upload(upload_id=new_upload_id(), owner="o", filename="f.bin", size=size,
                  chunk_size=chunk_size, total_chunks=chunk_count(size, chunk_size), md5=None,
                  status=IN_PROGRESS, created_at=now, updated_at=now)


@pytest.fixture
def storage(io_loop, tmp_path: Path) -> Iterator[LocalStorage]:
    executor = ThreadPoolExecutor(4)
    backend = LocalStorage(tmp_path / "data", executor, fsync=True)
    io_loop.run_sync(backend.start)
    yield backend
    io_loop.run_sync(backend.close)
    executor.shutdown()


def test_writers_waiting_together_share_one_flush(tmp_path: Path) -> None:
    """A flush is running (held inside fdatasync here); three writers finish
    meanwhile. They cannot ride on it (it may have started before their
    writes), so one more flush runs, for all three: 2 flushes, not 4."""
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    barrier = FlushBarrier()
    inside, release = threading.Event(), threading.Event()
    flushes: list[int] = []

    def flush() -> None:
        flushes.append(threading.get_ident())
        os.fdatasync(fd)  # a real flush of a real file
        if len(flushes) == 1:
            inside.set()
            release.wait(30)

    first = threading.Thread(target=barrier.sync, args=(flush,))
    first.start()
    assert inside.wait(30)
    late = [threading.Thread(target=barrier.sync, args=(flush,)) for _ in range(3)]
    for t in late:
        t.start()
    # All three are waiting on the barrier (none can flush while one runs).
    wait_until(lambda: barrier.waiting == 3, "three writers waiting")
    release.set()
    for t in [first, *late]:
        t.join(30)
    assert len(flushes) == 2
    os.close(fd)


def test_a_failed_flush_fails_every_writer_it_was_to_cover(tmp_path: Path) -> None:
    """Linux reports a writeback error once: the writers that waited for the
    failed flush must all hear it, not flush again and believe it."""
    barrier = FlushBarrier()
    inside, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def flush() -> None:
        calls.append(1)
        if len(calls) == 1:
            inside.set()
            release.wait(30)
            return
        raise OSError(5, "EIO (injected: a failing disk cannot be made here)")

    errors: list[BaseException] = []

    def writer() -> None:
        try:
            barrier.sync(flush)
        except OSError as exc:
            errors.append(exc)

    first = threading.Thread(target=writer)
    first.start()
    assert inside.wait(30)
    late = [threading.Thread(target=writer) for _ in range(3)]
    for t in late:
        t.start()
    wait_until(lambda: barrier.waiting == 3, "three writers waiting")
    release.set()
    for t in [first, *late]:
        t.join(30)
    assert len(calls) == 2 and len(errors) == 3


async def test_a_chunk_has_one_first_writer(io_loop, storage: LocalStorage) -> None:
    upload = new_upload(3 * CS)
    first = await storage.open_chunk(upload, 0)
    second = await storage.open_chunk(upload, 0)  # same chunk, same process
    assert first.in_place and not second.in_place
    await second.abort()
    await first.abort()
    # Written once (partly, then given up): every later writer goes aside.
    again = await storage.open_chunk(upload, 0)
    assert not again.in_place
    await again.abort()
    other = await storage.open_chunk(upload, 1)
    assert other.in_place
    await other.abort()


HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, int(sys.argv[2]), os.SEEK_SET)
print("held", flush=True)
sys.stdin.read()
"""


async def test_a_chunk_claimed_by_another_process_is_received_aside(
        io_loop, storage: LocalStorage) -> None:
    """Another instance on this data_dir writes chunk 1 now (its lockf on
    the chunk's claims byte): this process receives its copy aside."""
    upload = new_upload(3 * CS)
    warm = await storage.open_chunk(upload, 2)  # creates the upload's files
    await warm.abort()
    claims = storage.layout.claims_path(upload.upload_id)
    with subprocess.Popen([sys.executable, "-c", HOLD, str(claims), "1"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            writer = await storage.open_chunk(upload, 1)
            assert not writer.in_place
            await writer.abort()
        finally:
            holder.kill()
    writer = await storage.open_chunk(upload, 1)  # the kernel freed the killed claim
    assert writer.in_place
    await writer.abort()


async def test_chunks_of_an_earlier_release_are_migrated_and_merge(
        io_loop, storage: LocalStorage) -> None:
    """An upload in flight across the upgrade: its chunk_<index> files are
    moved into the data file the first time it is touched, then merged."""
    data = os.urandom(2 * CS + 100)
    upload = new_upload(len(data))
    folder = storage.layout.chunk_dir(upload.upload_id)
    folder.mkdir(parents=True)
    parts = [data[i:i + CS] for i in range(0, len(data), CS)]
    for index in (0, 2):
        (folder / f"chunk_{index}").write_bytes(parts[index])
    writer = await storage.open_chunk(upload, 1)  # the first touch after the upgrade
    writer.write(parts[1])
    await writer.sync()
    await writer.commit(hashlib.md5(parts[1]).hexdigest())
    assert sorted(p.name for p in folder.iterdir()) == ["claims", "data"]
    upload.chunks = [ChunkRecord(i, len(p), hashlib.md5(p).hexdigest())
                     for i, p in enumerate(parts)]
    staged = await storage.merge(upload, 1)
    assert staged.md5 == hashlib.md5(data).hexdigest()


def test_files_closed_by_the_lru_reopen_without_a_second_directory_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More uploads in flight than files kept open: each chunk reopens its
    upload's files, and must not pay the folder fsyncs again (they were made
    durable when the files were created). A counting wrapper around the real
    fsync_dir: the only way to see how often the kernel is asked."""
    from uploader.storage import datafile
    from uploader.storage.layout import Layout

    synced: list[Path] = []
    real = datafile.fsync_dir
    monkeypatch.setattr(datafile, "fsync_dir", lambda p: (synced.append(p), real(p))[1])
    layout = Layout(tmp_path / "data")
    layout.make_dirs()
    files = datafile.DataFiles(layout, fsync=True, max_open=2)
    uploads = [new_upload(2 * CS) for _ in range(3)]
    for _ in range(3):  # three rounds over three uploads: every acquire reopens
        for upload in uploads:
            files.release(files.acquire(upload))
    assert len(synced) == 2 * len(uploads)  # folder + tmp/, once per upload
    files.forget(uploads[0].upload_id)  # gone (deleted, merged): made anew, synced anew
    files.release(files.acquire(uploads[0]))
    assert len(synced) == 2 * len(uploads) + 2


def test_one_upload_opened_by_many_threads_at_once_is_one_set_of_files(
        tmp_path: Path) -> None:
    from uploader.storage import datafile
    from uploader.storage.layout import Layout

    layout = Layout(tmp_path / "data")
    layout.make_dirs()
    files = datafile.DataFiles(layout, fsync=False)
    upload = new_upload(4 * CS)
    start = threading.Barrier(8)

    def open_it() -> datafile.UploadFiles:
        start.wait(30)
        return files.acquire(upload)

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: open_it(), range(8)))
    assert len({id(f) for f in got}) == 1 and got[0].users == 8


def test_the_files_kept_open_follow_the_descriptor_limit() -> None:
    import resource

    from uploader.storage.datafile import default_max_open

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    expected = 1024 if soft == resource.RLIM_INFINITY else max(64, min(1024, soft // 8))
    assert default_max_open() == expected


async def test_a_whole_chunk_is_flushed_by_its_last_write_and_its_claim_never(
        io_loop, storage: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-request cost (issue 19): the job writing a chunk's last bytes
    flushes them, so sync() needs no second trip to the pool; and only the
    data file is flushed: a merge trusts a chunk only once its byte says
    STORED, written after that flush (datafile.UploadFiles._flush)."""
    flushed: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (flushed.append(fd), real(fd))[1])
    upload = new_upload(2 * CS)
    data = os.urandom(CS)
    writer = await storage.open_chunk(upload, 0)
    assert writer.in_place
    files = writer._files
    assert files is not None
    writer.writev([data[:100]])
    assert flushed == []  # not whole yet
    writer.writev([data[100:]])
    assert flushed == [files.data_fd]  # in the call that wrote the last bytes
    trips: list[object] = []
    real_run = storage.run
    monkeypatch.setattr(storage, "run", lambda fn, *args: (trips.append(fn), real_run(fn, *args))[1])
    await writer.sync()
    assert trips == []
    await writer.commit(hashlib.md5(data).hexdigest())
    assert flushed == [files.data_fd]


async def test_a_rewrite_flushes_the_chunks_claim_before_it_changes_stored_bytes(
        io_loop, storage: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    """Different bytes for a stored chunk are copied in place under its
    lock: the byte leaves STORED on disk first, so a power cut mid-copy
    cannot leave STORED over mixed bytes."""
    from uploader.storage import local_writer

    upload = new_upload(2 * CS)
    old, new = os.urandom(CS), os.urandom(CS)
    first = await storage.open_chunk(upload, 0)
    first.write(old)
    await first.sync()
    await first.commit(hashlib.md5(old).hexdigest())
    events: list[tuple[str, int]] = []
    real_sync, real_copy = os.fdatasync, local_writer.copy_at
    monkeypatch.setattr(os, "fdatasync", lambda fd: (events.append(("flush", fd)), real_sync(fd))[1])
    monkeypatch.setattr(local_writer, "copy_at",
                        lambda *args: (events.append(("copy", args[2])), real_copy(*args))[1])
    second = await storage.open_chunk(upload, 0)
    assert not second.in_place
    files = second._files
    assert files is not None
    second.write(new)
    await second.sync()

    async def forget() -> None:
        pass
    await second.commit(hashlib.md5(new).hexdigest(), forget)
    assert events.index(("flush", files.claims_fd)) < events.index(("copy", files.data_fd))
    with open(storage.layout.data_path(upload.upload_id), "rb") as f:
        assert f.read(CS) == new
