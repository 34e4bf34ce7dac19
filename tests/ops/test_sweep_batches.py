"""The expiry sweep at scale (issue 21.4): many abandoned uploads removed in
batches of expiry.batch_size, with its progress in /metrics while it runs;
on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from support import Api, MySQLServer
from uploader.models import IN_PROGRESS, Upload, utcnow
from uploader.naming import new_upload_id

from .helpers import parse_metrics, value

BATCH = 7
IDLE = 60  # ceil(60 / 7) = 9 batches


@pytest.fixture(params=["sqlite", "mysql"])
def config_overrides(request) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    settings: dict[str, dict[str, Any]] = {"expiry": {"batch_size": BATCH}}
    if request.param == "mysql":
        server: MySQLServer = request.getfixturevalue("mysql_server")
        settings["store"] = {"backend": "mysql", "mysql_dsn": server.create_database(),
                             "pool_size": 4}
    return settings


async def scrape(api: Api) -> dict:
    return parse_metrics((await api.call("GET", "/metrics")).body.decode())


async def abandoned(runtime: Any, count: int) -> list[str]:
    """Rows idle for longer than the TTL, straight into the store."""
    old = utcnow() - timedelta(seconds=runtime.config.expiry.ttl + 3600)
    ids = []
    for _ in range(count):
        upload = Upload(upload_id=new_upload_id(), owner="local", filename="old.bin", size=10,
                        chunk_size=1024, total_chunks=1, md5=None, status=IN_PROGRESS,
                        created_at=old, updated_at=old)
        await runtime.store.create_upload(upload)
        ids.append(upload.upload_id)
    return ids


class BlockOnNthRemoval:
    """Wraps the real storage; its ``n``-th ``delete_upload`` waits for
    ``release`` (a fake only in that pause: the sweep is caught mid-way, its
    earlier batches done, deterministically)."""

    def __init__(self, real: Any, n: int) -> None:
        self.real, self.n, self.calls = real, n, 0
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def delete_upload(self, upload: Any) -> None:
        self.calls += 1
        if self.calls == self.n:
            self.entered.set()
            await self.release.wait()
        await self.real.delete_upload(upload)


async def test_many_abandoned_uploads_go_in_batches_and_metrics_show_progress(
        api: Api, runtime) -> None:  # type: ignore[no-untyped-def]
    idle = await abandoned(runtime, IDLE)
    with_bytes = (await api.init(2048, 1024))["upload_id"]
    assert (await api.put_chunk(with_bytes, 0, b"x" * 1024))[0] == 200
    fresh = (await api.init(10, 1024))["upload_id"]
    old = utcnow() - timedelta(seconds=runtime.config.expiry.ttl + 3600)
    await runtime.store.touch([with_bytes], old, utcnow() + timedelta(seconds=1))
    await runtime.store._write(
        f"UPDATE upload_chunks SET received_at = {runtime.store.MARK}",
        (runtime.store._ts(old),))
    chunk_dir = runtime.config.data_dir / "tmp" / with_bytes
    assert chunk_dir.exists()

    service = runtime.service
    blocker = BlockOnNthRemoval(runtime.storage, n=3 * BATCH + 2)
    service.storage = blocker
    sweep = asyncio.ensure_future(runtime.expirer.sweep())
    await asyncio.wait_for(blocker.entered.wait(), 30)
    # Mid-sweep: three batches done and counted, the fourth under way;
    # requests are served meanwhile.
    during = await scrape(api)
    assert value(during, "uploader_expiry_running") == 1
    assert value(during, "uploader_expiry_batches_total") == 3
    assert value(during, "uploader_expiry_sweep_removed") == 3 * BATCH
    assert value(during, "uploader_expiry_removed_total", kind="expired") == 3 * BATCH
    assert (await api.status(fresh))["status"] == IN_PROGRESS
    blocker.release.set()
    report = await asyncio.wait_for(sweep, 60)
    service.storage = runtime.storage

    total = IDLE + 1
    assert report.expired_count == total and report.failed == []
    assert report.batches == -(-total // BATCH) > 1
    assert sorted(report.expired) == sorted(idle + [with_bytes])
    assert await runtime.store.existing_ids(idle + [with_bytes]) == set()
    assert not chunk_dir.exists()
    assert (await api.status(fresh))["status"] == IN_PROGRESS
    after = await scrape(api)
    assert value(after, "uploader_expiry_running") == 0
    assert value(after, "uploader_expiry_batches_total") == report.batches
    assert value(after, "uploader_expiry_sweep_removed") == total
    assert value(after, "uploader_expiry_removed_total", kind="expired") == total
    assert value(after, "uploader_expiry_last_duration_seconds") > 0
    events = await runtime.store.events_of(idle[0])
    assert [e.type for e in events] == ["upload.expired"]


async def test_batch_size_is_validated() -> None:
    from uploader.config import ConfigError, load_config
    for bad in (0, -1, 10001):
        with pytest.raises(ConfigError, match="expiry.batch_size"):
            load_config(None, env={}, overrides={"expiry": {"batch_size": bad}})
