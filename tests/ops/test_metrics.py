"""GET /metrics: the numbers move as an upload happens (SQLite app)."""

from __future__ import annotations

import random
from datetime import timedelta

from support import KiB, Api, chunks_of, md5
from uploader.metrics import Metrics
from uploader.models import IN_PROGRESS, Upload, utcnow

from .helpers import parse_metrics, value

CS = 64 * KiB
CHUNK_ROUTE = "/upload/{id}/chunk"


async def scrape(api: Api) -> dict:
    resp = await api.call("GET", "/metrics")
    assert resp.code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    return parse_metrics(resp.body.decode())


async def test_metrics_move_as_an_upload_happens(api: Api) -> None:
    before = await scrape(api)
    data = random.randbytes(3 * CS + 100)
    parts = chunks_of(data, CS)
    up = await api.init(len(data), CS, md5=md5(data))
    for index, part in enumerate(parts):
        code, doc = await api.put_chunk(up["upload_id"], index, part, md5(part))
        assert code == 200, doc

    mid = await scrape(api)

    def moved(name: str, **labels: str) -> float:
        return value(mid, name, **labels) - value(before, name, **labels)

    assert moved("uploader_chunks_written_total") == 4
    assert moved("uploader_chunk_bytes_received_total") == len(data)
    assert moved("uploader_chunk_duration_seconds_count") == 4
    assert moved("uploader_http_requests_total", route=CHUNK_ROUTE, method="PUT",
                 status="200") == 4
    assert moved("uploader_http_requests_total", route="/upload/init", method="POST",
                 status="201") == 1
    assert value(mid, "uploader_uploads", status="in_progress") == 1
    assert value(mid, "uploader_uploads", status="completed") == 0

    code, done = await api.complete(up["upload_id"])
    assert code == 200 and done["status"] == "completed", done
    # A chunk for a completed upload: 409 conflict, counted by code.
    code, _ = await api.put_chunk(up["upload_id"], 0, parts[0])
    assert code == 409
    after = await scrape(api)

    assert value(after, "uploader_merge_duration_seconds_count", outcome="completed") == 1
    assert value(after, "uploader_lock_wait_seconds_count", lock="upload",
                 outcome="acquired") >= 1
    assert value(after, "uploader_uploads", status="completed") == 1
    assert value(after, "uploader_uploads", status="in_progress") == 0
    assert value(after, "uploader_errors_total", code="conflict") == 1
    assert value(after, "uploader_http_requests_total", route=CHUNK_ROUTE, method="PUT",
                 status="409") == 1
    # The refused chunk was not written.
    assert value(after, "uploader_chunks_written_total") == value(mid,
                                                                  "uploader_chunks_written_total")


async def test_unknown_paths_are_one_label_not_one_per_path(api: Api) -> None:
    for n in range(3):
        resp = await api.call("GET", f"/no/such/{n}")
        assert resp.code == 404
    samples = await scrape(api)
    assert value(samples, "uploader_http_requests_total", route="unmatched", method="GET",
                 status="404") == 3
    assert value(samples, "uploader_errors_total", code="not_found") == 3
    assert not any("/no/such" in str(labels) for _, labels in samples)


async def test_expiry_sweep_counts_what_it_removed(api: Api, runtime) -> None:  # type: ignore[no-untyped-def]
    old = utcnow() - timedelta(seconds=runtime.config.expiry.ttl + 3600)
    stale = Upload(upload_id="ab" * 16, owner="local", filename="old.bin", size=10,
                   chunk_size=CS, total_chunks=1, md5=None, status=IN_PROGRESS,
                   created_at=old, updated_at=old)
    await runtime.store.create_upload(stale)
    report = await runtime.expirer.sweep()
    assert report.expired == [stale.upload_id]
    samples = await scrape(api)
    assert value(samples, "uploader_expiry_sweeps_total", result="done") == 1
    assert value(samples, "uploader_expiry_removed_total", kind="expired") == 1
    assert value(samples, "uploader_lock_wait_seconds_count", lock="expiry",
                 outcome="acquired") == 1


async def test_metrics_of_two_apps_stay_apart() -> None:
    # One registry per Metrics: a second app in the process neither clashes
    # (duplicate timeseries) nor shares counts.
    first, second = Metrics(), Metrics()
    first.chunks_written.inc(3)
    assert b"uploader_chunks_written_total 3.0" in first.render()
    assert b"uploader_chunks_written_total 0.0" in second.render()
