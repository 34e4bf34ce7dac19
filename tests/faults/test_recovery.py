"""What crashed merges leave behind. A merge recorded ``completed`` whose
process died before the rename: the staged file is published at start and by
the sweep, never swept as a stray. Staged files that can never be published:
removed at once, without waiting for stale_part_age."""

from __future__ import annotations

from pathlib import Path

from support import KiB, Api, chunks_of, md5
from uploader.recovery import publish_recorded_merges
from uploader.runtime import build_runtime

CS = 64 * KiB


async def test_recorded_merge_is_published_not_swept(api: Api, runtime, data_dir: Path,
                                                     config) -> None:
    data = bytes(range(256)) * (3 * CS // 256)
    up = await api.init(len(data), CS)
    for index, part in enumerate(chunks_of(data, CS)):
        assert (await api.put_chunk(up["upload_id"], index, part))[0] == 200
    real_publish = runtime.storage.publish

    async def die_before_rename(staged):  # a fault we cannot make otherwise: a crash here
        raise RuntimeError("process died")

    runtime.storage.publish = die_before_rename
    code, _ = await api.complete(up["upload_id"])
    assert code == 500
    runtime.storage.publish = real_publish
    row = await runtime.store.get_upload(up["upload_id"], with_chunks=False)
    assert row.status == "completed"
    [staged] = list((data_dir / "store").glob("*.part"))
    # The sweep, even with every .part counted stale, publishes it instead.
    config.storage.stale_part_age = 0
    report = await runtime.expirer.sweep()
    assert report.stray_parts == 0
    assert not staged.exists()
    final = data_dir / row.storage_key
    assert final.read_bytes() == data
    assert await publish_recorded_merges(runtime.service) == 0  # nothing left to do
    resp = await api.call("GET", f"/files/{up['upload_id']}")
    assert resp.code == 200 and md5(resp.body) == md5(data)


async def crashed_merger(runtime, upload_id: str) -> Path:
    """What a merge leaves when its process dies half-way: the row says
    ``merging`` with the merge's version, and the version's staged file is on
    disk. Made with the very calls a merge makes (begin_merge, then the
    storage merge); only the death itself cannot be made in-process."""
    version = await runtime.store.begin_merge(upload_id, ("in_progress",))
    upload = await runtime.store.get_upload(upload_id)
    upload.chunks = await runtime.store.get_chunks(upload_id)
    staged = await runtime.storage.merge(upload, version)
    return Path(str(staged.handle))  # the local backend's staged file


async def restart(config) -> None:
    """A second process starting on the same data (its recovery at start)."""
    again = build_runtime(config)
    await again.start()
    await again.stop()


async def test_dead_merge_files_go_without_waiting_for_their_age(api: Api, runtime, config,
                                                                 data_dir: Path) -> None:
    """Issue 13.13: staged merge files that can never be published went only
    when storage.stale_part_age (1 h) had passed. Now recovery (at start and
    before each sweep) removes those the database proves dead: superseded by
    a newer merge version, or of a merge that ended without completing;
    never the file of a merge that may still be running."""
    assert config.storage.stale_part_age == 3600  # no file here is that old
    data = bytes(range(256)) * (3 * CS // 256)
    interrupted = (await api.init(len(data), CS))["upload_id"]
    superseded = (await api.init(len(data), CS))["upload_id"]
    for upload_id in (interrupted, superseded):
        for index, part in enumerate(chunks_of(data, CS)):
            assert (await api.put_chunk(upload_id, index, part))[0] == 200
    first = await crashed_merger(runtime, interrupted)
    old = await crashed_merger(runtime, superseded)

    # Still `merging` at that version: its merger may be alive (another
    # instance, or its lock not yet expired): the sweep keeps the file.
    await runtime.expirer.sweep()
    assert first.exists() and old.exists()

    # The next complete merges again as version 2: version 1 is fenced out.
    code, done = await api.complete(superseded, md5(data))
    assert code == 200 and done["status"] == "completed"
    await runtime.expirer.sweep()
    assert not old.exists()
    assert first.exists()

    # Restart: the dead merge returns to in_progress (its lock is free), and
    # its file goes with it; completing it leaves no file behind either.
    await restart(config)
    assert not first.exists()
    assert (await api.status(interrupted))["status"] == "in_progress"
    code, done = await api.complete(interrupted, md5(data))
    assert code == 200 and done["md5"] == md5(data)
    assert list((data_dir / "store").glob("*.part")) == []
    for upload_id in (interrupted, superseded):
        resp = await api.call("GET", f"/files/{upload_id}")
        assert resp.code == 200 and md5(resp.body) == md5(data)
