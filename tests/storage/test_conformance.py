"""One conformance suite for every Storage backend (local disk, S3 on moto).

Chunks are 5 MiB (S3's minimum part size) plus a short last one, so the same
files exercise both backends for real.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

from uploader.config import S3Config
from uploader.models import IN_PROGRESS, Upload, chunk_count, utcnow
from uploader.naming import new_upload_id
from uploader.storage.base import StagedFile, UploadHooks
from uploader.storage.local import LocalStorage, MissingChunkData

MiB = 1 << 20
CS = 5 * MiB


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(params=["local", "s3"])
def storage(request, io_loop, tmp_path: Path) -> Iterator[Any]:
    executor = ThreadPoolExecutor(4)
    if request.param == "local":
        backend: Any = LocalStorage(tmp_path / "data", executor, fsync=False)
    else:
        from uploader.storage.s3 import S3Storage
        moto = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        backend = S3Storage(S3Config(**moto.config(bucket, prefix="up/")), tmp_path / "data",
                            executor, orphan_age=0)
    io_loop.run_sync(backend.start)
    yield backend
    io_loop.run_sync(backend.close)
    executor.shutdown()


async def new_upload(storage: Any, size: int, chunk_size: int = CS) -> Upload:
    now = utcnow()
    upload = Upload(upload_id=new_upload_id(), owner="o", filename="f.bin", size=size,
                    chunk_size=chunk_size, total_chunks=chunk_count(size, chunk_size), md5=None,
                    status=IN_PROGRESS, created_at=now, updated_at=now)
    if isinstance(storage, UploadHooks):
        upload.backend_state = await storage.create_upload(upload)
    return upload


async def put(storage: Any, upload: Upload, index: int, data: bytes) -> None:
    writer = await storage.open_chunk(upload, index)
    for start in range(0, len(data), MiB):  # several writes, as the receiver does
        writer.write(data[start:start + MiB])
    await writer.commit(md5(data))


def parts(data: bytes) -> list[bytes]:
    return [data[i:i + CS] for i in range(0, len(data), CS)]


async def read_all(storage: Any, key: str, start: int, end: int) -> bytes:
    return b"".join([piece async for piece in storage.read_file(key, start, end)])


async def test_merge_publish_read(io_loop, storage) -> None:
    data = os.urandom(2 * CS + 1000)
    upload = await new_upload(storage, len(data))
    for index in (2, 0, 1):  # any order
        await put(storage, upload, index, parts(data)[index])
    assert upload.upload_id in await storage.temp_upload_ids()
    seen: list[int] = []
    staged = await storage.merge(upload, 1, seen.append)
    assert (staged.md5, staged.size, staged.version) == (md5(data), len(data), 1)
    assert seen and seen[-1] == len(data)
    assert await storage.file_size(staged.key) is None  # nothing visible yet
    assert await storage.staged_exists(staged)
    await storage.publish(staged)
    assert not await storage.staged_exists(staged)
    assert await storage.file_size(staged.key) == len(data)
    assert await read_all(storage, staged.key, 0, len(data)) == data
    assert await read_all(storage, staged.key, 5, 100) == data[5:100]
    assert await read_all(storage, staged.key, CS - 10, CS + 10) == data[CS - 10:CS + 10]
    assert await read_all(storage, staged.key, len(data) - 1, len(data)) == data[-1:]
    await storage.delete_chunks(upload.upload_id)
    assert upload.upload_id not in await storage.temp_upload_ids()
    await storage.delete_upload(upload.replace(storage_key=staged.key))
    assert await storage.file_size(staged.key) is None


async def test_replaced_chunk_wins(io_loop, storage) -> None:
    data = bytearray(os.urandom(CS + 10))
    upload = await new_upload(storage, len(data))
    await put(storage, upload, 0, os.urandom(CS))
    await put(storage, upload, 1, bytes(data[CS:]))
    await put(storage, upload, 0, bytes(data[:CS]))  # re-sent with other bytes
    staged = await storage.merge(upload, 1)
    assert staged.md5 == md5(bytes(data))
    await storage.publish(staged)
    assert await read_all(storage, staged.key, 0, len(data)) == bytes(data)


async def test_aborted_chunk_leaves_nothing(io_loop, storage) -> None:
    data = os.urandom(CS + 10)
    upload = await new_upload(storage, len(data))
    await put(storage, upload, 1, data[CS:])
    writer = await storage.open_chunk(upload, 0)
    writer.write(data[:1000])
    await writer.abort()
    await writer.abort()  # idempotent, never raises
    with pytest.raises(MissingChunkData) as info:
        await storage.merge(upload, 1)
    assert info.value.indices == [0]


async def test_discard_keeps_chunks_for_a_retry(io_loop, storage) -> None:
    data = os.urandom(CS + 10)
    upload = await new_upload(storage, len(data))
    for index, part in enumerate(parts(data)):
        await put(storage, upload, index, part)
    stale = await storage.merge(upload, 1)
    await storage.discard(stale)  # e.g. a checksum mismatch, or a fenced-out merger
    assert await storage.file_size(stale.key) is None
    fresh = await storage.merge(upload, 2)
    assert fresh.md5 == md5(data)
    await storage.publish(fresh)
    assert await read_all(storage, fresh.key, 0, len(data)) == data


async def test_publish_after_restart_without_handle(io_loop, storage) -> None:
    """The service republishes from the row alone after a crash between
    recording 'completed' and publish (StagedFile without handle)."""
    data = os.urandom(CS + 10)
    upload = await new_upload(storage, len(data))
    for index, part in enumerate(parts(data)):
        await put(storage, upload, index, part)
    staged = await storage.merge(upload, 3)
    bare = StagedFile(upload.upload_id, 3, staged.key, staged.md5, staged.size)
    assert await storage.staged_exists(bare)
    await storage.publish(bare)
    assert await read_all(storage, staged.key, 0, len(data)) == data


async def test_zero_byte_file(io_loop, storage) -> None:
    upload = await new_upload(storage, 0)
    staged = await storage.merge(upload, 1)
    assert (staged.md5, staged.size) == (md5(b""), 0)
    await storage.publish(staged)
    assert await storage.file_size(staged.key) == 0
    assert await read_all(storage, staged.key, 0, 0) == b""


async def test_single_short_chunk(io_loop, storage) -> None:
    data = os.urandom(1234)
    upload = await new_upload(storage, len(data))
    await put(storage, upload, 0, data)
    staged = await storage.merge(upload, 1)
    await storage.publish(staged)
    assert await read_all(storage, staged.key, 0, len(data)) == data


async def test_delete_chunks_of_unknown_or_absent_upload(io_loop, storage) -> None:
    await storage.delete_chunks(new_upload_id())  # absent is fine
    assert await storage.file_size("nothing-here") is None
    assert await storage.recover(older_than=0) == 0


async def test_ping(io_loop, storage):
    await storage.ping()  # started and reachable: ready


async def test_ping_without_staging_folder_is_unavailable(io_loop, storage, tmp_path: Path):
    import shutil

    from uploader.errors import Unavailable
    shutil.rmtree(tmp_path / "data")
    with pytest.raises(Unavailable):
        await storage.ping()


async def test_s3_ping_of_a_deleted_bucket_is_unavailable(io_loop, request, tmp_path: Path):
    """The bucket goes away under a running server: readiness says so."""
    from uploader.errors import Unavailable
    from uploader.storage.s3 import S3Storage
    moto = request.getfixturevalue("s3_server")
    bucket = moto.new_bucket()
    executor = ThreadPoolExecutor(1)
    backend = S3Storage(S3Config(**moto.config(bucket)), tmp_path / "data", executor)
    await backend.start()
    try:
        moto.client.delete_bucket(Bucket=bucket)
        with pytest.raises(Unavailable):
            await backend.ping()
    finally:
        await backend.close()
        executor.shutdown()


async def test_s3_start_on_a_missing_bucket_is_a_config_error(io_loop, request, tmp_path: Path):
    """A bucket that does not exist stops the server at start, with the key
    named (it used to start, then answer every init with 500)."""
    from uploader.config import ConfigError
    from uploader.storage.s3 import S3Storage
    moto = request.getfixturevalue("s3_server")
    executor = ThreadPoolExecutor(1)
    backend = S3Storage(S3Config(**moto.config("no-such-bucket-here")), tmp_path / "data",
                        executor)
    try:
        with pytest.raises(ConfigError, match="s3.bucket 'no-such-bucket-here' does not exist"):
            await backend.start()
    finally:
        await backend.close()
        executor.shutdown()
