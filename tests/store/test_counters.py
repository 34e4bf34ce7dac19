"""The counters of schema step 8 (issue 21.1): the quota and the metrics
read them instead of counting uploads, so they must equal a real count after
any mix of concurrent changes, on SQLite and on MariaDB (where the pool runs
the changes on several connections at once)."""

from __future__ import annotations

import asyncio
import random

import pytest

from uploader.errors import UploadError
from uploader.models import (ABORTED, COMPLETED, FAILED, IN_PROGRESS, MERGING, TusState,
                             utcnow)

from .test_conformance import new_upload

ACTIVE = (IN_PROGRESS, MERGING)


async def real_counts(store) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """(uploads per status, (active uploads, bytes) per owner) counted from the rows."""
    by_status = {r[0]: int(r[1]) for r in await store._all(
        "SELECT status, COUNT(*) FROM uploads GROUP BY status")}
    by_owner = {r[0]: (int(r[1]), int(r[2])) for r in await store._all(
        "SELECT owner, COUNT(*), SUM(total_size) FROM uploads "
        "WHERE status IN ('in_progress', 'merging') GROUP BY owner")}
    return by_status, by_owner


async def assert_counters_exact(store, owners) -> None:
    by_status, by_owner = await real_counts(store)
    assert await store.count_by_status() == by_status
    for owner in owners:
        assert await store.active_totals(owner) == by_owner.get(owner, (0, 0)), owner
    assert await store.active_totals() == (sum(c for c, _ in by_owner.values()),
                                           sum(b for _, b in by_owner.values()))


async def test_counters_exact_after_concurrent_lifecycles(io_loop, store):
    owners = ["alice", "bob", "carol"]
    rng = random.Random(21)

    async def lifecycle(n: int) -> None:
        upload = new_upload(owners[n % 3], status=IN_PROGRESS)
        upload.size = rng.randrange(1, 10**12)
        await store.create_upload(upload)
        uid = upload.upload_id
        fate = n % 6
        if fate == 0:    # deleted as DELETE does: aborted, then the rows go
            await store.set_status(uid, ABORTED, (IN_PROGRESS, FAILED, COMPLETED))
            await store.delete_upload(uid)
        elif fate == 1:  # merged
            version = await store.begin_merge(uid, (IN_PROGRESS, FAILED))
            await store.finish_merge(uid, version, status=COMPLETED, md5="0" * 32)
        elif fate == 2:  # a merge that failed, retried, and is still merging
            version = await store.begin_merge(uid, (IN_PROGRESS,))
            await store.finish_merge(uid, version, status=FAILED, error={"code": "x"})
            await store.begin_merge(uid, (FAILED,))
        elif fate == 3:  # a tus upload that declared its length late: the bytes change
            await store.update_tus(uid, TusState(), size=upload.size + 7, total_chunks=3)
        elif fate == 4:  # expired as the sweep does: the row removed while active
            await store.delete_upload(uid)
        # fate 5: left in progress

    await asyncio.gather(*(lifecycle(n) for n in range(120)))
    await assert_counters_exact(store, owners + ["nobody"])
    assert (await store.active_totals("alice"))[0] > 0


async def test_a_status_change_that_does_not_apply_changes_no_counter(io_loop, store):
    upload = new_upload("alice", status=COMPLETED)
    await store.create_upload(upload)
    before = await store.count_by_status()
    assert not await store.set_status(upload.upload_id, ABORTED, (IN_PROGRESS,))
    assert await store.set_status(upload.upload_id, COMPLETED, (COMPLETED,))  # same status
    assert await store.count_by_status() == before
    await assert_counters_exact(store, ["alice"])


@pytest.mark.parametrize("limit", [5])
async def test_admit_is_exact_under_concurrent_inits(io_loop, store, limit):
    """40 inits of one owner at once with room for 5: exactly 5 rows, and the
    refused ones left nothing behind (the check runs inside the insert's
    transaction, after the counter counted the row)."""
    def admit(count: int, reserved: int, reserved_all: int) -> None:
        assert reserved_all >= reserved
        if count > limit:
            raise UploadError("rate_limited", "too many active uploads")

    async def init() -> bool:
        try:
            await store.create_upload(new_upload("alice"), admit=admit)
            return True
        except UploadError:
            return False

    results = await asyncio.gather(*(init() for _ in range(40)))
    assert sum(results) == limit
    assert (await store.active_totals("alice"))[0] == limit
    await assert_counters_exact(store, ["alice"])
    # Room again once one leaves the active statuses.
    uid = (await store.list_uploads("alice"))[0].upload_id
    await store.set_status(uid, COMPLETED, (IN_PROGRESS,))
    assert await init()
    assert not await init()


async def test_migration_recounts_rows_written_before_the_counters(io_loop,
                                                                   fresh_store_factory):
    """A database at step 7 with uploads in it gets exact counters from step 8
    (and re-running the step recounts instead of doubling)."""
    store = fresh_store_factory()
    await store.open()
    for status in (IN_PROGRESS, IN_PROGRESS, MERGING, COMPLETED, ABORTED):
        await store.create_upload(new_upload("alice", status=status, created_at=utcnow()))
    # Back to step 7 as an older version left it: no counters at all, and
    # nothing of the later steps (step 9's column and table).
    await store._write("DELETE FROM upload_counts")
    await store._write("ALTER TABLE uploads DROP COLUMN verified")
    await store._write("DROP TABLE signed_parts")
    await store._write("DELETE FROM schema_version WHERE version >= 8")
    assert await store.count_by_status() == {}
    await store.migrate()
    await assert_counters_exact(store, ["alice"])
    assert await store.active_totals("alice") == (3, 3 * 10 * 1024 * 1024)
