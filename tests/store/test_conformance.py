"""One conformance suite for every MetadataStore (sqlite, mysql).

Each test gets a fresh, empty store (see conftest.py); the ``io_loop``
fixture makes the test's loop current for pytest-tornasync.
"""

from __future__ import annotations

import asyncio
import uuid
import warnings
from datetime import datetime, timedelta

import pytest

from uploader.models import (ABORTED, COMPLETED, FAILED, IN_PROGRESS, MERGING, ChunkRecord,
                             Upload, utcnow)
from uploader.store.schema import MYSQL_STEPS, SQLITE_STEPS

MD5_A = "a" * 32
MD5_B = "b" * 32


def new_upload(owner: str = "alice", *, status: str = IN_PROGRESS, filename: str = "f.bin",
               created_at: datetime | None = None, updated_at: datetime | None = None,
               **fields) -> Upload:
    created = created_at or utcnow()
    return Upload(upload_id=uuid.uuid4().hex, owner=owner, filename=filename,
                  size=10 * 1024 * 1024, chunk_size=1024 * 1024, total_chunks=10,
                  md5=fields.pop("md5", None), status=status, created_at=created,
                  updated_at=updated_at or created, **fields)


def chunk(index: int, md5: str = MD5_A, *, at: datetime | None = None, size: int = 1024) -> ChunkRecord:
    return ChunkRecord(index=index, size=size, md5=md5, received_at=at or utcnow())


async def test_create_get_round_trip(io_loop, store):
    created = datetime(2026, 1, 2, 3, 4, 5, 123456)
    upload = new_upload(filename="report ü.pdf", md5=MD5_A, created_at=created,
                        updated_at=created + timedelta(microseconds=1), merge_version=3,
                        storage_key="store/x_report.pdf", error={"code": "checksum_mismatch"},
                        backend_state={"upload_id": "2~abc/+=", "n": 1})
    upload.size, upload.chunk_size, upload.total_chunks = 50 * 2**30, 64 * 2**20, 800
    await store.create_upload(upload)

    got = await store.get_upload(upload.upload_id)
    assert got == upload  # every field, microseconds included; no chunks yet
    assert got.received == [] and got.last_chunk_at is None
    assert await store.get_upload(uuid.uuid4().hex) is None


async def test_backend_state_absent_is_none(io_loop, store):
    upload = new_upload()
    await store.create_upload(upload)
    got = await store.get_upload(upload.upload_id, with_chunks=False)
    assert got.backend_state is None
    [listed] = await store.list_uploads(upload.owner)
    assert listed.backend_state is None


async def test_received_is_sorted_and_last_chunk_at(io_loop, store):
    upload = new_upload()
    await store.create_upload(upload)
    base = datetime(2026, 3, 1, 12, 0, 0, 1)
    for index, offset in ((5, 2), (0, 9), (2, 1)):
        assert await store.record_chunk(upload.upload_id,
                                        chunk(index, at=base + timedelta(microseconds=offset)))
    got = await store.get_upload(upload.upload_id)
    assert got.received == [0, 2, 5]
    assert got.last_chunk_at == base + timedelta(microseconds=9)
    chunks = await store.get_chunks(upload.upload_id)
    assert [c.index for c in chunks] == [0, 2, 5]
    assert chunks[0] == ChunkRecord(0, 1024, MD5_A, base + timedelta(microseconds=9))


async def test_list_uploads_filters_isolation_and_order(io_loop, store):
    t0 = datetime(2026, 1, 1)
    old = new_upload("alice", filename="a.bin", created_at=t0)
    mid = new_upload("alice", filename="b.bin", created_at=t0 + timedelta(hours=1),
                     status=COMPLETED)
    new = new_upload("alice", filename="a.bin", created_at=t0 + timedelta(hours=2))
    other = new_upload("bob", filename="a.bin", created_at=t0 + timedelta(hours=3))
    for u in (old, mid, new, other):
        await store.create_upload(u)
    await store.record_chunk(new.upload_id, chunk(1))
    await store.record_chunk(new.upload_id, chunk(0))

    listed = await store.list_uploads("alice")
    assert [u.upload_id for u in listed] == [new.upload_id, mid.upload_id, old.upload_id]
    assert listed[0].received == [0, 1] and listed[2].received == []
    assert [u.upload_id for u in await store.list_uploads("alice", status=IN_PROGRESS)] == \
        [new.upload_id, old.upload_id]
    assert [u.upload_id for u in await store.list_uploads("alice", filename="a.bin")] == \
        [new.upload_id, old.upload_id]
    assert [u.upload_id for u in await store.list_uploads(
        "alice", status=COMPLETED, filename="b.bin")] == [mid.upload_id]
    assert [u.upload_id for u in await store.list_uploads("alice", limit=1)] == [new.upload_id]
    assert [u.upload_id for u in await store.list_uploads("bob")] == [other.upload_id]
    assert await store.list_uploads("carol") == []
    # Exact filename match: no pattern or case folding.
    assert await store.list_uploads("alice", filename="A.BIN") == []
    assert await store.list_uploads("alice", filename="%.bin") == []


async def test_get_without_chunks_and_count(io_loop, store):
    upload = new_upload()
    await store.create_upload(upload)
    for index in (4, 1):
        assert await store.record_chunk(upload.upload_id, chunk(index))
    bare = await store.get_upload(upload.upload_id, with_chunks=False)
    assert bare.received == [] and bare.last_chunk_at is None
    assert bare.status == IN_PROGRESS and bare.size == upload.size
    assert await store.count_chunks(upload.upload_id) == 2
    assert await store.count_chunks(uuid.uuid4().hex) == 0


async def test_record_chunk_upserts(io_loop, store):
    upload = new_upload()
    await store.create_upload(upload)
    first = chunk(3, MD5_A, size=100)
    assert await store.record_chunk(upload.upload_id, first)
    # The very same record again (a retried request) still reports success.
    assert await store.record_chunk(upload.upload_id, first)
    later = chunk(3, MD5_B, size=200, at=first.received_at + timedelta(seconds=1))
    assert await store.record_chunk(upload.upload_id, later)
    assert await store.get_chunks(upload.upload_id) == [later]


async def test_record_chunk_counted(io_loop, store):
    upload = new_upload()
    await store.create_upload(upload)
    uid = upload.upload_id
    assert await store.record_chunk_counted(uid, chunk(7)) == 1
    assert await store.record_chunk_counted(uid, chunk(7, MD5_B)) == 1  # replaced, not added
    assert await store.record_chunk_counted(uid, chunk(0)) == 2
    assert [c.md5 for c in await store.get_chunks(uid)] == [MD5_A, MD5_B]
    assert await store.begin_merge(uid, [IN_PROGRESS]) == 1
    assert await store.record_chunk_counted(uid, chunk(3)) is None
    assert await store.record_chunk_counted(uuid.uuid4().hex, chunk(0)) is None
    assert await store.count_chunks(uid) == 2


async def test_received_of_many_chunks(io_loop, store):
    upload = new_upload()
    upload.total_chunks = 3000
    await store.create_upload(upload)
    for index in reversed(range(0, 3000, 2)):
        assert await store.record_chunk(upload.upload_id, chunk(index))
    got = await store.get_upload(upload.upload_id)
    assert got.received == list(range(0, 3000, 2))


@pytest.mark.parametrize("status", [MERGING, COMPLETED, ABORTED])
async def test_record_chunk_refused_unless_in_progress(io_loop, store, status):
    upload = new_upload(status=status)
    await store.create_upload(upload)
    assert not await store.record_chunk(upload.upload_id, chunk(0))
    assert await store.get_chunks(upload.upload_id) == []


async def test_record_chunk_refused_for_unknown_upload(io_loop, store):
    missing = uuid.uuid4().hex
    assert not await store.record_chunk(missing, chunk(0))
    assert await store.get_chunks(missing) == []


async def test_record_chunk_refused_after_merge_began(io_loop, store):
    upload = new_upload()
    await store.create_upload(upload)
    assert await store.record_chunk(upload.upload_id, chunk(0, MD5_A))
    assert await store.begin_merge(upload.upload_id, [IN_PROGRESS]) == 1
    assert not await store.record_chunk(upload.upload_id, chunk(0, MD5_B))
    assert [c.md5 for c in await store.get_chunks(upload.upload_id)] == [MD5_A]


async def test_delete_chunk(io_loop, store):
    upload = new_upload()
    await store.create_upload(upload)
    for i in range(3):
        await store.record_chunk(upload.upload_id, chunk(i))
    await store.delete_chunk(upload.upload_id, 1)
    await store.delete_chunk(upload.upload_id, 7)  # absent: no error
    assert (await store.get_upload(upload.upload_id)).received == [0, 2]


async def test_begin_merge_bumps_version_and_checks_status(io_loop, store):
    upload = new_upload()
    await store.create_upload(upload)
    before = (await store.get_upload(upload.upload_id)).updated_at
    assert await store.begin_merge(upload.upload_id, [IN_PROGRESS, FAILED]) == 1
    got = await store.get_upload(upload.upload_id)
    assert (got.status, got.merge_version) == (MERGING, 1)
    assert got.updated_at >= before
    # Already merging: not allowed from in_progress/failed; nothing changes.
    assert await store.begin_merge(upload.upload_id, [IN_PROGRESS, FAILED]) is None
    assert (await store.get_upload(upload.upload_id)).merge_version == 1
    # A takeover of a stuck merge is allowed when the caller says so.
    assert await store.begin_merge(upload.upload_id, [MERGING]) == 2
    assert await store.begin_merge(upload.upload_id, []) is None
    assert await store.begin_merge(uuid.uuid4().hex, [IN_PROGRESS]) is None


async def test_finish_merge_is_fenced(io_loop, store):
    upload = new_upload()
    await store.create_upload(upload)
    stale = await store.begin_merge(upload.upload_id, [IN_PROGRESS])
    current = await store.begin_merge(upload.upload_id, [MERGING])
    assert current == stale + 1

    assert not await store.finish_merge(upload.upload_id, stale, status=COMPLETED,
                                        md5=MD5_B, storage_key="store/stale")
    unchanged = await store.get_upload(upload.upload_id)
    assert (unchanged.status, unchanged.md5, unchanged.storage_key) == (MERGING, None, None)

    assert await store.finish_merge(upload.upload_id, current, status=COMPLETED,
                                    md5=MD5_A, storage_key="store/ok")
    done = await store.get_upload(upload.upload_id)
    assert (done.status, done.md5, done.storage_key, done.error) == \
        (COMPLETED, MD5_A, "store/ok", None)
    # Not merging any more: even the right version is refused.
    assert not await store.finish_merge(upload.upload_id, current, status=IN_PROGRESS)
    assert (await store.get_upload(upload.upload_id)).status == COMPLETED


async def test_finish_merge_failure_keeps_md5_and_records_error(io_loop, store):
    upload = new_upload(md5=MD5_A)
    await store.create_upload(upload)
    version = await store.begin_merge(upload.upload_id, [IN_PROGRESS])
    error = {"code": "checksum_mismatch", "message": "whole-file MD5 differs"}
    assert await store.finish_merge(upload.upload_id, version, status=IN_PROGRESS, error=error)
    got = await store.get_upload(upload.upload_id)
    assert (got.status, got.md5, got.error) == (IN_PROGRESS, MD5_A, error)


async def test_set_status(io_loop, store):
    upload = new_upload()
    await store.create_upload(upload)
    assert await store.set_status(upload.upload_id, ABORTED, [IN_PROGRESS, FAILED])
    assert (await store.get_upload(upload.upload_id)).status == ABORTED
    assert not await store.set_status(upload.upload_id, IN_PROGRESS, [COMPLETED])
    assert not await store.set_status(upload.upload_id, IN_PROGRESS, [])
    assert (await store.get_upload(upload.upload_id)).status == ABORTED
    assert not await store.set_status(uuid.uuid4().hex, ABORTED, [IN_PROGRESS])


async def test_delete_upload_removes_chunks(io_loop, store):
    keep, gone = new_upload(), new_upload()
    for u in (keep, gone):
        await store.create_upload(u)
        await store.record_chunk(u.upload_id, chunk(0))
        await store.record_chunk(u.upload_id, chunk(1))
    await store.delete_upload(gone.upload_id)
    assert await store.get_upload(gone.upload_id) is None
    assert await store.get_chunks(gone.upload_id) == []
    assert (await store.get_upload(keep.upload_id)).received == [0, 1]
    await store.delete_upload(gone.upload_id)  # again: no error


async def test_signed_parts_and_parts_verification(io_loop, store):
    """Direct uploads verified by parts: the MD5 each part URL was signed for
    (the latest signing of an index wins), and a completion that records
    ``verified`` next to the client's claimed MD5; both go with the upload."""
    upload, other = new_upload(md5=MD5_A), new_upload()
    for u in (upload, other):
        await store.create_upload(u)
    assert await store.signed_parts(upload.upload_id) == {}
    await store.record_signed_parts(upload.upload_id, [(0, MD5_A), (2, MD5_B)])
    await store.record_signed_parts(upload.upload_id, [(2, MD5_A), (1, MD5_B), (1, MD5_A)])
    await store.record_signed_parts(other.upload_id, [(0, MD5_B)])
    assert await store.signed_parts(upload.upload_id) == {0: MD5_A, 1: MD5_A, 2: MD5_A}
    version = await store.begin_merge(upload.upload_id, [IN_PROGRESS])
    assert await store.finish_merge(upload.upload_id, version, status=COMPLETED,
                                    storage_key="k", verified="parts")
    done = await store.get_upload(upload.upload_id)
    assert (done.md5, done.verified) == (MD5_A, "parts")
    assert (done.to_json()["md5"], done.to_json()["md5_claimed"]) == (None, MD5_A)
    await store.delete_upload(upload.upload_id)
    await store.delete_uploads([other.upload_id])
    assert await store.signed_parts(upload.upload_id) == {}
    assert await store.signed_parts(other.upload_id) == {}


async def test_find_expired_counts_last_activity(io_loop, store):
    now = utcnow()
    cutoff = now - timedelta(days=7)
    long_ago = now - timedelta(days=30)

    idle = new_upload(created_at=long_ago)
    idle_failed = new_upload(created_at=long_ago, status=FAILED)
    idle_completed = new_upload(created_at=long_ago, status=COMPLETED)
    recent_row = new_upload(created_at=long_ago, updated_at=now)
    recent_chunk = new_upload(created_at=long_ago)
    old_chunks_only = new_upload(created_at=long_ago)
    for u in (idle, idle_failed, idle_completed, recent_row, recent_chunk, old_chunks_only):
        await store.create_upload(u)
    await store.record_chunk(recent_chunk.upload_id, chunk(0, at=long_ago))
    await store.record_chunk(recent_chunk.upload_id, chunk(1, at=now))
    await store.record_chunk(old_chunks_only.upload_id, chunk(0, at=long_ago))

    expired = await store.find_expired(cutoff, [IN_PROGRESS, FAILED])
    assert {u.upload_id for u in expired} == \
        {idle.upload_id, idle_failed.upload_id, old_chunks_only.upload_id}
    assert {u.upload_id for u in await store.find_expired(cutoff, [FAILED])} == \
        {idle_failed.upload_id}
    assert len(await store.find_expired(cutoff, [IN_PROGRESS, FAILED], limit=2)) == 2
    assert await store.find_expired(cutoff, []) == []
    # Rows come back without chunk lists (the sweep does not need them).
    assert all(u.received == [] for u in expired)


async def test_find_by_status(io_loop, store):
    merging = [new_upload(status=MERGING) for _ in range(3)]
    for u in merging + [new_upload(), new_upload(status=COMPLETED)]:
        await store.create_upload(u)
    found = await store.find_by_status(MERGING)
    assert {u.upload_id for u in found} == {u.upload_id for u in merging}
    assert all(u.status == MERGING for u in found)
    assert len(await store.find_by_status(MERGING, limit=2)) == 2
    assert await store.find_by_status(ABORTED) == []


async def test_existing_ids(io_loop, store):
    uploads = [new_upload() for _ in range(3)]
    for u in uploads:
        await store.create_upload(u)
    unknown = [uuid.uuid4().hex for _ in range(1200)]  # more than one IN batch
    ids = unknown[:600] + [u.upload_id for u in uploads] + unknown[600:]
    assert await store.existing_ids(ids) == {u.upload_id for u in uploads}
    assert await store.existing_ids([]) == set()
    done = uploads[1].upload_id
    assert await store.set_status(done, COMPLETED, (IN_PROGRESS,))
    assert await store.existing_ids(ids, statuses=(COMPLETED,)) == {done}
    assert await store.existing_ids(ids, statuses=(COMPLETED, IN_PROGRESS)) == \
        {u.upload_id for u in uploads}


def _steps_for(store) -> int:
    return len(SQLITE_STEPS) if type(store).__name__ == "SQLiteStore" else len(MYSQL_STEPS)


async def test_migrate_twice_is_idempotent(io_loop, store):
    upload = new_upload()
    await store.create_upload(upload)
    with warnings.catch_warnings():
        # Expected server notes ("table already exists") must not leak out
        # as Python warnings on every start.
        warnings.simplefilter("error")
        first = await store.migrate()
        second = await store.migrate()
    assert first == second == _steps_for(store)
    assert await store.get_upload(upload.upload_id) == upload  # data untouched


async def test_open_creates_schema_on_fresh_database(io_loop, fresh_store_factory):
    store = fresh_store_factory()
    await store.open()
    assert await store.migrate() == _steps_for(store)
    upload = new_upload()
    await store.create_upload(upload)
    assert await store.get_upload(upload.upload_id) == upload


async def test_concurrent_migrate_on_fresh_database(io_loop, fresh_mysql_store_factory):
    stores = [fresh_mysql_store_factory() for _ in range(3)]
    # open() migrates: three instances starting at once on an empty database.
    await asyncio.gather(*(s.open() for s in stores))
    versions = await asyncio.gather(*(s.migrate() for s in stores))
    assert versions == [_steps_for(stores[0])] * 3
    upload = new_upload()
    await stores[0].create_upload(upload)
    assert await stores[1].record_chunk(upload.upload_id, chunk(0))
    assert (await stores[2].get_upload(upload.upload_id)).received == [0]


async def test_ping(io_loop, store):
    await store.ping()  # an open store answers; outages: test_mysql_outage.py


async def test_count_by_status(io_loop, store):
    assert await store.count_by_status() == {}
    for status in (IN_PROGRESS, IN_PROGRESS, COMPLETED, ABORTED):
        await store.create_upload(new_upload(status=status))
    other = new_upload(owner="bob", status=MERGING)
    await store.create_upload(other)
    counts = await store.count_by_status()
    assert counts == {IN_PROGRESS: 2, COMPLETED: 1, ABORTED: 1, MERGING: 1}
    await store.delete_upload(other.upload_id)
    assert (await store.count_by_status()).get(MERGING, 0) == 0


async def test_active_totals_count_in_progress_and_merging_per_owner(io_loop, store):
    assert await store.active_totals("alice") == (0, 0)
    assert await store.active_totals() == (0, 0)
    sizes = {IN_PROGRESS: 100, MERGING: 20, COMPLETED: 3000, FAILED: 400, ABORTED: 5000}
    for status, size in sizes.items():
        upload = new_upload("alice", status=status)
        upload.size = size
        await store.create_upload(upload)
    big = new_upload("bob")
    big.size = 50 * 2**30  # sums past 32 bits
    await store.create_upload(big)
    assert await store.active_totals("alice") == (2, 120)
    assert await store.active_totals("bob") == (1, 50 * 2**30)
    assert await store.active_totals("nobody") == (0, 0)
    assert await store.active_totals() == (3, 120 + 50 * 2**30)
    # Leaving the active statuses frees the reservation.
    await store.set_status(big.upload_id, COMPLETED, (IN_PROGRESS,))
    assert await store.active_totals("bob") == (0, 0)


async def test_metadata_round_trip_and_filter(io_loop, store):
    tagged = new_upload("alice", metadata={"project": "apollo", "path": "a/ü b.txt"})
    other = new_upload("alice", metadata={"project": "apollo "})
    bobs = new_upload("bob", metadata={"project": "apollo"})
    plain = new_upload("alice")
    for upload in (tagged, other, bobs, plain):
        await store.create_upload(upload)
    assert (await store.get_upload(tagged.upload_id)).metadata == tagged.metadata
    assert (await store.get_upload(plain.upload_id)).metadata == {}
    found = await store.list_uploads("alice", metadata={"project": "apollo"})
    assert [u.upload_id for u in found] == [tagged.upload_id]  # exact, and alice's only
    found = await store.list_uploads("alice", metadata={"project": "apollo",
                                                        "path": "a/ü b.txt"})
    assert [u.upload_id for u in found] == [tagged.upload_id]
    assert await store.list_uploads("alice", metadata={"project": "x"}) == []
    await store.delete_upload(tagged.upload_id)
    assert await store.list_uploads("alice", metadata={"project": "apollo"}) == []
