"""A merge recorded ``completed`` whose process died before the rename: the
staged file is published at start and by the sweep, never swept as a stray."""

from __future__ import annotations

from pathlib import Path

from support import KiB, Api, chunks_of, md5
from uploader.recovery import publish_recorded_merges

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
