"""The merge fence in one process (SQLite, local disk): a stale merger never
publishes or deletes the new owner's work, and a finish_merge whose outcome is
unknown (Unavailable) is read back before anything is discarded.

Faults here are injected with thin wrappers around the real store and storage:
"the database answered nothing after committing" and "this merger is paused
right here" cannot be produced on demand with a real socket or a real process
inside one event loop. The multi-process versions with SIGSTOP and a cut TCP
path are in tests/e2e/.
"""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path
from typing import Any

import pytest

import uploader.merging
from support import KiB, Api, chunks_of, md5
from uploader.errors import Unavailable, UploadError
from uploader.models import COMPLETED, IN_PROGRESS, MERGING

CS = 64 * KiB


class StoreWrapper:
    """Delegates to the real store; tests replace single methods."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
def config_overrides():  # type: ignore[no-untyped-def]
    # These tests steer the full merge at complete (the fenced path every
    # merge ends in); the incremental merge would fold the chunks before it.
    return {"merge": {"incremental": False}}


async def uploaded(api: Api, chunks: int = 4) -> tuple[str, bytes]:
    data = random.randbytes(chunks * CS - 100)
    up = await api.init(len(data), CS)
    for i, part in enumerate(chunks_of(data, CS)):
        code, doc = await api.put_chunk(up["upload_id"], i, part)
        assert code == 200, doc
    return up["upload_id"], data


def parts_left(data_dir: Path) -> list[Path]:
    return list(data_dir.rglob("*.part"))


def use_store(runtime: Any, store: StoreWrapper) -> None:
    """The service and the merge saga both read the store: swap it in both."""
    runtime.service.store = store
    runtime.merges.store = store


async def test_unknown_outcome_that_committed_is_published(api: Api, runtime, data_dir) -> None:
    uid, data = await uploaded(api)
    store = StoreWrapper(runtime.service.store)

    async def finish_then_lose_reply(upload_id: str, version: int, **kw: Any) -> bool:
        applied = await store.real.finish_merge(upload_id, version, **kw)
        if kw.get("status") == COMPLETED:
            raise Unavailable("database unavailable")  # the reply is lost, the commit is not
        return applied

    store.finish_merge = finish_then_lose_reply
    use_store(runtime, store)
    code, done = await api.complete(uid)
    assert code == 200, done
    assert done["status"] == COMPLETED and done["md5"] == md5(data)
    resp = await api.call("GET", f"/files/{uid}")
    assert resp.code == 200 and resp.body == data
    assert parts_left(data_dir) == []


async def test_unknown_outcome_not_applied_is_retried(api: Api, runtime, data_dir) -> None:
    uid, data = await uploaded(api)
    store = StoreWrapper(runtime.service.store)
    failures = []

    async def fail_once(upload_id: str, version: int, **kw: Any) -> bool:
        if kw.get("status") == COMPLETED and not failures:
            failures.append(version)
            raise Unavailable("database unavailable")  # before the statement reached it
        return await store.real.finish_merge(upload_id, version, **kw)

    store.finish_merge = fail_once
    use_store(runtime, store)
    code, done = await api.complete(uid)
    assert code == 200 and done["md5"] == md5(data) and failures == [1]
    assert (await api.call("GET", f"/files/{uid}")).body == data
    assert parts_left(data_dir) == []


async def test_unknown_outcome_unreadable_keeps_the_staged_file(
        api: Api, runtime, data_dir, monkeypatch) -> None:
    """The database stays away after committing: complete answers 503, the
    staged file is kept, and the first download once it is back publishes it."""
    monkeypatch.setattr(uploader.merging, "SETTLE_PAUSE", 0)
    uid, data = await uploaded(api)
    store = StoreWrapper(runtime.service.store)
    down = asyncio.Event()

    async def finish_then_go_away(upload_id: str, version: int, **kw: Any) -> bool:
        applied = await store.real.finish_merge(upload_id, version, **kw)
        if kw.get("status") == COMPLETED:
            down.set()
            raise Unavailable("database unavailable")
        return applied

    async def get_upload(upload_id: str, **kw: Any) -> Any:
        if down.is_set():
            raise Unavailable("database unavailable")
        return await store.real.get_upload(upload_id, **kw)

    store.finish_merge = finish_then_go_away
    store.get_upload = get_upload
    use_store(runtime, store)
    code, err = await api.complete(uid)
    assert code == 503 and err["error"]["code"] == "unavailable"
    assert len(parts_left(data_dir)) == 1  # not discarded: it is the committed result
    down.clear()  # the database is back
    assert (await api.status(uid))["status"] == COMPLETED
    resp = await api.call("GET", f"/files/{uid}")
    assert resp.code == 200 and resp.body == data
    assert parts_left(data_dir) == []


async def test_stale_merger_is_fenced_out(api: Api, runtime, data_dir, caplog) -> None:
    """Merger 1 stages its file, then "pauses" (lost its lock); merger 2 takes
    over and completes. Merger 1's late finish is refused: it removes only its
    own staged part, never the final file or the chunk records."""
    caplog.set_level(logging.INFO, logger="uploader.merge")
    uid, data = await uploaded(api)
    service = runtime.service
    version = await service.store.begin_merge(uid, (IN_PROGRESS,))
    assert version == 1
    stale = await service.store.get_upload(uid)
    real_merge = runtime.storage.merge
    staged, resume = asyncio.Event(), asyncio.Event()

    async def pausing_merge(upload: Any, v: int, progress: Any = None) -> Any:
        result = await real_merge(upload, v, progress)
        if v == 1:
            staged.set()
            await resume.wait()  # the SIGSTOP of the e2e test, in-process
        return result

    runtime.storage.merge = pausing_merge
    # Merger 1 runs without the lock, like a process whose lock expired.
    stale_task = asyncio.ensure_future(runtime.merges._merge_locked(stale, 1, None))
    await staged.wait()
    code, done = await api.complete(uid)  # merger 2: status merging, lock free
    assert code == 200 and done["md5"] == md5(data)
    final = [p for p in (data_dir / "store").iterdir() if not p.name.endswith(".part")]
    resume.set()
    with pytest.raises(UploadError) as info:
        await stale_task
    assert info.value.code == "conflict"
    assert "merge superseded %s version 1" % uid in caplog.text
    assert [p.read_bytes() == data for p in final] == [True]
    current = await service.store.get_upload(uid)
    assert (current.status, current.merge_version) == (COMPLETED, 2)
    assert current.received == list(range(4))
    assert parts_left(data_dir) == []


async def test_stale_merger_finding_chunks_gone_keeps_records(api: Api, runtime) -> None:
    """A merger that resumes after the new owner deleted the chunks must not
    "forget" the chunk records (that path is for chunks lost on disk)."""
    uid, data = await uploaded(api)
    service = runtime.service
    assert await service.store.begin_merge(uid, (IN_PROGRESS,)) == 1
    stale = await service.store.get_upload(uid)
    code, done = await api.complete(uid)  # the new owner, version 2
    assert code == 200 and done["md5"] == md5(data)
    with pytest.raises(UploadError) as info:
        await runtime.merges._merge_locked(stale, 1, None)
    assert info.value.code == "conflict"
    current = await service.store.get_upload(uid)
    assert current.status == COMPLETED and current.received == list(range(4))
    assert (await api.call("GET", f"/files/{uid}")).body == data


async def test_lost_chunk_bytes_are_forgotten_by_the_owner(api: Api, runtime, data_dir) -> None:
    """The owner's own MissingChunkData path still works after the reorder:
    records of vanished chunks are dropped and the client is told which."""
    uid, _ = await uploaded(api)
    # Chunk 2 is not marked stored in the data file any more (as a disk that
    # lost the claims file's last write would leave it).
    claims = data_dir / "tmp" / uid / "claims"
    marks = bytearray(claims.read_bytes())
    marks[2] = 0
    claims.write_bytes(bytes(marks))
    code, err = await api.complete(uid)
    assert code == 409 and err["error"]["code"] == "incomplete"
    assert err["error"]["missing"] == [2]
    status = await api.status(uid)
    assert status["status"] == IN_PROGRESS and status["received"] == [0, 1, 3]
    assert status["status"] != MERGING
