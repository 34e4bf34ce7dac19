"""The events outbox of every MetadataStore (SQLite, MariaDB): an event is
written with its change or not at all, and leases hand each event to one
dispatcher at a time, a dead one's to another after its lease."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import timedelta

import pymysql
import pytest

from uploader.event_model import make_event
from uploader.models import ABORTED, COMPLETED, IN_PROGRESS, MERGING, utcnow
from uploader.store.outbox import DELIVERED, FAILED, PENDING, new_token

from .test_conformance import new_upload


# A duplicate event id breaks the events table's unique key.
DUPLICATE = (sqlite3.IntegrityError, pymysql.err.IntegrityError)


def event_for(upload, kind: str = "upload.created"):
    return make_event(kind, upload, {"upload_id": upload.upload_id, "status": upload.status})


async def test_event_commits_with_its_change(io_loop, store):
    upload = new_upload()
    created = event_for(upload)
    await store.create_upload(upload, created)
    assert [e.event_id for e in await store.events_of(upload.upload_id)] == [created.event_id]

    deleted = event_for(upload, "upload.deleted")
    assert await store.set_status(upload.upload_id, ABORTED, (IN_PROGRESS,), deleted)
    # Refused by its condition: the change does not apply, its event is not written.
    again = event_for(upload, "upload.deleted")
    assert not await store.set_status(upload.upload_id, ABORTED, (IN_PROGRESS,), again)
    assert [e.type for e in await store.events_of(upload.upload_id)] == \
        ["upload.created", "upload.deleted"]


async def test_fenced_merge_result_writes_no_event(io_loop, store):
    upload = new_upload()
    await store.create_upload(upload)
    old = await store.begin_merge(upload.upload_id, (IN_PROGRESS,))
    new = await store.begin_merge(upload.upload_id, (MERGING,))
    assert new == old + 1
    stale = event_for(upload, "upload.completed")
    assert not await store.finish_merge(upload.upload_id, old, status=COMPLETED,
                                        storage_key="k", event=stale)
    assert await store.events_of(upload.upload_id) == []
    fresh = event_for(upload, "upload.completed")
    assert await store.finish_merge(upload.upload_id, new, status=COMPLETED, storage_key="k",
                                    event=fresh)
    assert [e.event_id for e in await store.events_of(upload.upload_id)] == [fresh.event_id]


async def test_a_failing_event_rolls_the_change_back(io_loop, store):
    """The event insert fails (an event id already used): the upload row of
    the same transaction must not exist either, nor its status change."""
    first = new_upload()
    event = event_for(first)
    await store.create_upload(first, event)
    second = new_upload()
    with pytest.raises(DUPLICATE):
        await store.create_upload(second, event)  # same event id: unique key
    assert await store.get_upload(second.upload_id) is None
    assert await store.list_uploads(second.owner, metadata=None) == \
        [await store.get_upload(first.upload_id)]
    with pytest.raises(DUPLICATE):
        await store.set_status(first.upload_id, ABORTED, (IN_PROGRESS,), event)
    assert (await store.get_upload(first.upload_id)).status == IN_PROGRESS


async def test_claims_are_exclusive_and_expire(io_loop, store):
    uploads = [new_upload() for _ in range(5)]
    for upload in uploads:
        await store.create_upload(upload, event_for(upload))
    now = utcnow()
    a, b = new_token(), new_token()
    first = await store.claim_events(a, now, now + timedelta(seconds=30), 3)
    second = await store.claim_events(b, now, now + timedelta(seconds=30), 10)
    assert [e.upload_id for e in first] == [u.upload_id for u in uploads[:3]]
    assert [e.upload_id for e in second] == [u.upload_id for u in uploads[3:]]
    # Nothing free until a lease runs out; then the dead claimer's events return.
    assert await store.claim_events(new_token(), now, now + timedelta(seconds=30), 10) == []
    later = now + timedelta(seconds=31)
    c = new_token()
    taken = await store.claim_events(c, later, later + timedelta(seconds=30), 10)
    assert [e.seq for e in taken] == [e.seq for e in first + second]
    # The old claimer can no longer record them; the new one can.
    assert await store.mark_dispatched(a, [e.seq for e in first], later, []) == 0
    assert await store.mark_dispatched(c, [e.seq for e in taken], later, []) == 5
    assert await store.claim_events(new_token(), later + timedelta(hours=1),
                                    later + timedelta(hours=2), 10) == []
    stats = await store.outbox_stats()
    assert stats.pending_events == 0 and stats.oldest_pending_at is None


async def test_deliveries_retry_fail_and_prune(io_loop, store):
    upload = new_upload()
    await store.create_upload(upload, event_for(upload))
    now = utcnow()
    token = new_token()
    [event] = await store.claim_events(token, now, now + timedelta(seconds=30), 10)
    await store.mark_dispatched(token, [event.seq], now,
                                [(event.seq, "webhook:a"), (event.seq, "webhook:b")])
    stats = await store.outbox_stats()
    assert stats.pending_deliveries == {"webhook:a": 1, "webhook:b": 1}

    t1 = new_token()
    claimed = await store.claim_deliveries(t1, ["webhook:a", "webhook:b"], now,
                                           now + timedelta(seconds=40), 10)
    assert sorted(d.sink for d in claimed) == ["webhook:a", "webhook:b"]
    assert claimed[0].event.payload == event.payload and claimed[0].attempts == 0
    assert await store.claim_deliveries(new_token(), ["webhook:a"], now,
                                        now + timedelta(seconds=40), 10) == []
    retry_at = now + timedelta(seconds=5)
    assert await store.finish_delivery(t1, event.seq, "webhook:a", state=PENDING, attempts=1,
                                       next_attempt_at=retry_at, now=now, error="HTTP 500")
    assert await store.finish_delivery(t1, event.seq, "webhook:b", state=FAILED, attempts=9,
                                       next_attempt_at=now, now=now, error="gave up")
    # Not due before its time; due after.
    assert await store.claim_deliveries(new_token(), ["webhook:a"], now,
                                        now + timedelta(seconds=40), 10) == []
    t2 = new_token()
    [again] = await store.claim_deliveries(t2, ["webhook:a"], retry_at,
                                           retry_at + timedelta(seconds=40), 10)
    assert again.attempts == 1
    assert not await store.finish_delivery(t1, event.seq, "webhook:a", state=DELIVERED,
                                           attempts=2, next_attempt_at=now, now=now)
    assert await store.finish_delivery(t2, event.seq, "webhook:a", state=DELIVERED,
                                       attempts=2, next_attempt_at=retry_at, now=retry_at)
    stats = await store.outbox_stats()
    assert stats.pending_deliveries == {} and stats.failed_deliveries == {"webhook:b": 1}
    # Retention: everything finished before the cut goes, the event with it.
    assert await store.prune_events(retry_at + timedelta(seconds=1)) == 1
    assert await store.events_of(upload.upload_id) == []


async def test_an_event_with_no_sink_is_written_dispatched(io_loop, store):
    """No stream and no webhook: the event is in the outbox, already
    dispatched, so no dispatcher pass (a lease and a mark: two commits)
    follows the change (issue 21.2)."""
    upload = new_upload()
    event = replace(make_event("upload.created", upload, {"upload_id": upload.upload_id}),
                     dispatched=True)
    await store.create_upload(upload, event)
    assert (await store.outbox_stats()).pending_events == 0
    assert await store.claim_events("t", utcnow(), utcnow(), 10) == []
    [stored] = await store.events_of(upload.upload_id)
    assert stored.event_id == event.event_id
