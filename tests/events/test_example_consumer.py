"""examples/events_consumer.py end to end: a real server publishing to a real
Redis stream, the consumer as its own process running ``sha256sum`` through a
wrapper that counts runs. Each completed upload is processed once, across a
SIGKILL and restart of the consumer and a duplicate event on the stream
(issue 16 item 5)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from support import md5, wait_until_async
from support.server import spawn

from .helpers import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
KiB = 1 << 10
CS = 64 * KiB


@pytest.fixture
def consumer(tmp_path: Path, stream_key: str, api) -> Iterator[Any]:
    out = tmp_path / "sidecars"
    runs = tmp_path / "runs.log"
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        # The command counts its runs, then hashes the file.
        command = ["sh", "-c", f'echo "$1" >> {runs}; sha256sum < "$1"', "sh", "{file}"]
        with open(tmp_path / "consumer.log", "ab") as log_file:
            proc = spawn(
                [sys.executable, str(ROOT / "examples" / "events_consumer.py"),
                 "--redis", REDIS_URL, "--stream", stream_key, "--group", "test",
                 "--consumer", "c1", "--url", f"http://127.0.0.1:{api.port}",
                 "--out", str(out), "--suffix", "sha256", "--block", "200", "--", *command],
                stdout=log_file, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    start.out, start.runs = out, runs  # type: ignore[attr-defined]
    yield start
    for proc in procs:
        proc.kill()
        proc.wait(10)


async def upload(api, data: bytes) -> str:
    up = await api.init(len(data), CS)
    for index in range(0, len(data), CS):
        code, doc = await api.put_chunk(up["upload_id"], index // CS, data[index:index + CS])
        assert code == 200, doc
    code, doc = await api.complete(up["upload_id"], md5(data))
    assert code == 200, doc
    return up["upload_id"]


def sidecar(out: Path, upload_id: str) -> str | None:
    path = out / f"{upload_id}.sha256"
    return path.read_text().split()[0] if path.exists() else None


async def test_each_completed_upload_processed_once_across_restarts(
        api, runtime, consumer, redis_sync, stream_key):
    files = [os.urandom(CS + i) for i in range(4)]
    first = consumer()
    ids = [await upload(api, files[0]), await upload(api, files[1])]
    await wait_until_async(lambda: all(sidecar(consumer.out, u) for u in ids),
                           "a sidecar of every completed upload")

    first.kill()  # SIGKILL: whatever it held unacknowledged is redelivered
    first.wait(10)
    ids += [await upload(api, files[2]), await upload(api, files[3])]
    # The server publishes at least once: a duplicate must not run twice.
    entries = redis_sync.xrange(stream_key)
    redis_sync.xadd(stream_key, entries[-1][1])
    consumer()
    await wait_until_async(lambda: all(sidecar(consumer.out, u) for u in ids),
                           "a sidecar of every completed upload")
    for upload_id, data in zip(ids, files):
        assert sidecar(consumer.out, upload_id) == hashlib.sha256(data).hexdigest()
    # Wait for the duplicate to be acknowledged, then count the runs.
    await wait_until_async(lambda: redis_sync.xpending(stream_key, "test")["pending"] == 0
                           and redis_sync.xinfo_groups(stream_key)[0]["last-delivered-id"]
                           == redis_sync.xrange(stream_key)[-1][0],
                           "the duplicate to be read and acknowledged")
    assert len(consumer.runs.read_text().splitlines()) == 4
