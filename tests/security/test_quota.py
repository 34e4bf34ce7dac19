"""Quotas and the free-disk reserve: refused before bytes are spent."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from support import KiB, MiB, Api

from .helpers import AUTH_ON, TokenApi

CS = 64 * KiB
GiB = 1 << 30


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    return {"auth": dict(AUTH_ON),
            "quota": {"max_active_uploads": 3, "max_reserved_bytes": 10 * MiB}}


async def test_active_uploads_per_owner_429(alice: TokenApi, bob: TokenApi):
    ids = [(await alice.init(1, CS))["upload_id"] for _ in range(3)]
    resp = await alice.call("POST", "/upload/init", {"filename": "f", "size": 1})
    assert resp.code == 429 and b'"code":"rate_limited"' in resp.body
    assert int(resp.headers["Retry-After"]) >= 1
    # Another owner has a budget of its own.
    await bob.init(1, CS)
    # Finishing (or deleting) an upload frees a slot.
    code, _ = await alice.put_chunk(ids[0], 0, b"x")
    code, _ = await alice.complete(ids[0])
    assert code == 200
    await alice.init(1, CS)
    resp = await alice.call("DELETE", f"/upload/{ids[1]}")
    assert resp.code == 204
    await alice.init(1, CS)


async def test_reserved_bytes_per_owner_507(alice: TokenApi, bob: TokenApi):
    await alice.init(6 * MiB, MiB)
    code, doc = await alice.json("POST", "/upload/init",
                                 {"filename": "f", "size": 5 * MiB, "chunk_size": MiB})
    assert code == 507 and doc["error"]["code"] == "insufficient_storage"
    assert doc["error"]["quota_bytes"] == 10 * MiB and doc["error"]["reserved_bytes"] == 6 * MiB
    await alice.init(4 * MiB, MiB)  # exactly up to the quota
    await bob.init(10 * MiB, MiB)


async def test_file_size_and_chunk_limits_come_first(alice: TokenApi):
    code, doc = await alice.json("POST", "/upload/init",
                                 {"filename": "f", "size": 60 * GiB, "chunk_size": MiB})
    assert code == 413 and doc["error"]["code"] == "too_large"
    code, doc = await alice.json("POST", "/upload/init",
                                 {"filename": "f", "size": 10, "chunk_size": 1})
    assert code == 400 and doc["error"]["code"] == "invalid_request"


async def test_free_space_reserve_at_init_and_on_chunks(alice: TokenApi, config,
                                                        data_dir: Path):
    config.quota.max_reserved_bytes = 0
    up = await alice.init(2 * CS, CS)
    free = shutil.disk_usage(data_dir).free
    # A reserve 1 GiB below the free space: a 1 KiB file fits, 20 GiB do not
    # (the margin absorbs whatever else writes to this disk meanwhile).
    config.storage.min_free_bytes = free - GiB
    code, doc = await alice.json("POST", "/upload/init",
                                 {"filename": "f", "size": 20 * GiB, "chunk_size": 8 * MiB})
    assert code == 507 and doc["error"]["code"] == "insufficient_storage"
    await alice.init(KiB, CS)
    code, _ = await alice.put_chunk(up["upload_id"], 0, b"a" * CS)
    assert code == 200
    # No room for even one chunk: refused before its body is read.
    config.storage.min_free_bytes = free + GiB
    code, doc = await alice.put_chunk(up["upload_id"], 1, b"b" * CS)
    assert code == 507 and doc["error"]["code"] == "insufficient_storage"
    status = await alice.status(up["upload_id"])
    assert status["status"] == "in_progress" and status["received"] == [0]
    assert sorted(p.name for p in (data_dir / "tmp" / up["upload_id"]).iterdir()) == ["claims", "data"]
    config.storage.min_free_bytes = 0
    code, _ = await alice.put_chunk(up["upload_id"], 1, b"b" * CS)
    assert code == 200


@pytest.mark.parametrize("config_overrides", [{"quota": {"max_active_uploads": 0}}])
async def test_zero_means_no_cap(api: Api, config_overrides):
    for _ in range(5):
        await api.init(1, CS)


class CountedSpace:
    """A SpaceReporting that counts its readings (each a statvfs in the pool)."""

    def __init__(self, free: int) -> None:
        self.free, self.reads = free, 0

    async def free_bytes(self) -> int:
        self.reads += 1
        return self.free


async def test_free_space_is_read_once_per_age_less_the_chunk_bytes_since(io_loop) -> None:
    """Per-request cost (issue 21): not a statvfs per init and per chunk.
    One reading serves every check within FREE_SPACE_AGE (concurrent ones
    share it); the chunk bytes admitted since are taken off it."""
    from uploader.quota import FreeSpace

    space = CountedSpace(10 * GiB)
    free = FreeSpace(space, max_age=3600)
    assert [await f for f in [free.free() for _ in range(5)]] == [10 * GiB] * 5
    free.take(GiB)
    space.free = 0  # what a new reading would see
    assert await free.free() == 9 * GiB and space.reads == 1
    stale = FreeSpace(space, max_age=-1)  # every reading is too old at once
    stale.take(GiB)
    assert await stale.free() == 0 and space.reads == 2
