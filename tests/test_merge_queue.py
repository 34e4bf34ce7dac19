"""The Redis merge queue on its own, against a real Redis: jobs reach one
worker, progress is readable from any other queue client, finished jobs leave
the stream, and a job whose worker died is taken over after the TTL.

The first tests put a stand-in in place of the merge saga
(``Merges.run_here``), so the test decides when a merge ends and how far it
got; the last ones run the app with the real saga behind the queue (and
tests/e2e/test_merge_queue.py runs it across processes)."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any, Awaitable, Callable, Iterator

import pytest
import redis
import redis.asyncio

from support import KiB, Api, md5, require_redis, run_uploader, wait_until_async
from uploader.errors import Unavailable, UploadError
from uploader.merge_queue import RedisMergeQueue

REDIS_URL = os.environ.get("TEST_UPLOADER_REDIS_URL", "redis://127.0.0.1:6379/15")
TTL = 1.0


@pytest.fixture
def stream() -> Iterator[str]:
    """A stream name of this test's own; it and its progress keys (and the
    lock keys of the app tests, under the same prefix) go afterwards."""
    name = f"uploader-test:merges:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(require_redis(REDIS_URL))
    yield name
    for key in client.scan_iter(match=name + "*"):
        client.delete(key)
    client.close()


class Runner:
    """A stand-in merge: records who ran what, reports progress, and ends
    when the test says so (or raises what the test gives)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.progress: dict[str, int] = {}
        self.release: dict[str, asyncio.Future[Any]] = {}

    async def __call__(self, upload_id: str, md5: str | None) -> Any:
        self.calls.append((upload_id, md5))
        future = self.release.setdefault(upload_id, asyncio.get_running_loop().create_future())
        return await future


def make_queue(stream: str) -> RedisMergeQueue:
    return RedisMergeQueue(REDIS_URL, stream, TTL, concurrency=2)


async def test_a_job_runs_once_shows_progress_and_leaves(io_loop, stream):
    worker, other = make_queue(stream), make_queue(stream)
    runner = Runner()
    worker.start(runner, runner.progress.get)
    try:
        await other.submit("u1", "a" * 32)
        assert await other.progress("u1") == 0  # queued reads as merging, 0 bytes
        await wait_until_async(lambda: runner.calls, "the worker to take the job")
        assert runner.calls == [("u1", "a" * 32)]
        runner.progress["u1"] = 12345
        # Published by the worker, read through another client (another instance).
        await until(lambda: _equals(other.progress("u1"), 12345),
                    "the progress to reach other instances")
        assert await other.depth() == 1
        runner.release["u1"].set_result(None)
        await until(lambda: _equals(other.depth(), 0), "the job to leave the stream")
        assert await other.progress("u1") is None
        assert runner.calls == [("u1", "a" * 32)]  # once
    finally:
        await worker.close()
        await other.close()


async def test_a_refused_merge_is_finished_an_outage_is_not(io_loop, stream):
    """A refusal is an outcome (recorded in the row): the job is done. An
    outage mid-merge is not: the job stays pending for a later attempt."""
    worker = make_queue(stream)
    runner = Runner()
    worker.start(runner, runner.progress.get)
    try:
        await worker.submit("refused", None)
        await worker.submit("away", None)
        await wait_until_async(lambda: len(runner.release) == 2, "both jobs to start")
        runner.release["refused"].set_exception(UploadError("checksum_mismatch", "differs"))
        runner.release["away"].set_exception(Unavailable("database unavailable"))
        await wait_until_async(lambda: worker.busy == 0, "both jobs to end")
        pending = await worker.client.xpending_range(stream, "mergers", "-", "+", 10)
        assert len(pending) == 1 and await worker.depth() == 1  # "away", left for later
        entry = await worker.client.xrange(stream, pending[0]["message_id"],
                                           pending[0]["message_id"])
        assert entry[0][1][b"upload_id"] == b"away"
    finally:
        await worker.close()


async def test_a_dead_workers_job_is_taken_over(io_loop, stream):
    dead, alive = make_queue(stream), make_queue(stream)
    first, second = Runner(), Runner()
    dead.start(first, first.progress.get)
    await alive.submit("u2", None)
    await wait_until_async(lambda: first.calls, "the first worker to take the job")
    # It dies mid-merge: no ack, no more heartbeats (close() cancels without acking).
    await dead.close()
    alive.start(second, second.progress.get)
    try:
        await wait_until_async(lambda: second.calls, "the job to be taken over", timeout=20)
        assert second.calls == [("u2", None)]
        second.release["u2"].set_result(None)
        await until(lambda: _equals(alive.depth(), 0), "the job to finish")
    finally:
        await alive.close()


async def test_a_live_worker_keeps_its_job(io_loop, stream):
    """A merge longer than the TTL is not taken over while its worker lives."""
    busy, idle = make_queue(stream), make_queue(stream)
    first, second = Runner(), Runner()
    busy.start(first, first.progress.get)
    try:
        await busy.submit("u3", None)
        await wait_until_async(lambda: first.calls, "the job to start")
        idle.start(second, second.progress.get)
        # The idle worker looks for dead workers' jobs every TTL/3; after six
        # looks (two TTLs) the busy worker's job would long be idle without
        # its heartbeats.
        await wait_until_async(lambda: idle.reclaim_rounds >= 6, "six reclaim rounds",
                               timeout=30)
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        pending = await client.xpending_range(stream, "mergers", "-", "+", 10)
        await client.aclose()
        assert [p["consumer"].decode() for p in pending] == [busy.consumer]
        assert second.calls == []
        first.release["u3"].set_result(None)
        await until(lambda: _equals(busy.depth(), 0), "the job to finish")
    finally:
        await busy.close()
        await idle.close()


async def until(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 15.0) -> Any:
    """wait_until_async for a condition that must itself be awaited (a Redis read)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await probe()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


async def _equals(probe: Awaitable[Any], expected: Any) -> bool:
    return await probe == expected


# -- the app with the real saga behind the queue ---------------------------------

@pytest.fixture
def config_overrides(request, stream: str) -> dict[str, Any]:
    workers = getattr(request, "param", "embedded")
    return {"locks": {"backend": "redis", "redis_url": REDIS_URL,
                      "redis_prefix": stream + ":", "ttl": 5},
            "merge": {"queue": "redis", "workers": workers,
                      "wait_seconds": 10}}


async def send(api: Api, data: bytes, chunk: int = 64 * KiB) -> str:
    up = await api.init(len(data), chunk)
    for index in range(0, len(data), chunk):
        code, doc = await api.put_chunk(up["upload_id"], index // chunk,
                                        data[index:index + chunk])
        assert code == 200, doc
    return up["upload_id"]


async def test_complete_through_the_queue(api: Api, runtime) -> None:
    data = os.urandom(200 * KiB)
    uid = await send(api, data)
    code, doc = await api.complete(uid, "0" * 32)
    # The refusal the worker recorded comes back as complete's answer.
    assert code == 422 and doc["error"]["code"] == "checksum_mismatch", doc
    assert doc["error"]["actual"] == md5(data)
    code, doc = await api.complete(uid, md5(data))
    assert code == 200 and doc["status"] == "completed", doc
    resp = await api.call("GET", f"/files/{uid}")
    assert md5(resp.body) == md5(data)
    assert await runtime.merges.queue_depth() == 0  # both jobs done and gone


@pytest.mark.parametrize("config_overrides", ["external"], indirect=True)
async def test_external_workers_only_serving_instances_do_not_merge(api: Api, runtime,
                                                                     config) -> None:
    """With merge.workers external nothing here takes the job: complete
    answers 202, and the upload reads as merging while it waits."""
    config.merge.wait_seconds = 0.2
    data = os.urandom(100 * KiB)
    uid = await send(api, data)
    code, doc = await api.complete(uid, md5(data))
    assert code == 202 and doc["status"] == "merging" and doc["merged_bytes"] == 0, doc
    status = await api.status(uid)
    assert status["status"] == "merging" and status["merged_bytes"] == 0
    assert await runtime.merges.queue_depth() == 1
    resp = await api.call("GET", "/metrics")
    assert 'uploader_queue_depth{queue="merge"} 1.0' in resp.body.decode()


def test_a_worker_needs_the_redis_queue(tmp_path) -> None:
    done = run_uploader("worker", cwd=tmp_path)
    assert done.returncode == 2
    assert "merge.queue: redis" in done.stderr
