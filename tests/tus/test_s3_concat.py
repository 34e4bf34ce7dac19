"""tus concatenation (``parallelUploads``) on the S3 backend, against moto's
real S3 HTTP API (docs/tus.md, "Concatenation"; uploader/concat_s3.py).

What S3 holds is checked from outside with a plain botocore client: the
objects, the open multipart uploads, the final object's part count (its ETag
ends in ``-N``). Faults are injected with thin wrappers around the real
storage calls (an S3 outage on one request, a merger paused at one point),
as in tests/test_merge_fencing.py: they cannot be produced on demand with a
real moto inside one event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import uploader.concat_s3 as concat_s3
from support import Api
from support.s3 import MotoS3
from uploader.auth import hash_token
from uploader.cleanup import Expirer
from uploader.concat_plan import plan_parts
from uploader.errors import Unavailable, UploadError
from uploader.locks.base import LockTimeout
from uploader.models import COMPLETED, IN_PROGRESS, utcnow
from uploader.recovery import return_interrupted_merges
from uploader.store.rows import ts_to_text

MiB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}
TOKENS = {"alice": "alice-token-1234", "bob": "bob-token-5678"}


@pytest.fixture
def config_overrides(request: Any, s3_server: MotoS3,
                     s3_bucket: str) -> dict[str, dict[str, Any]]:
    s3 = s3_server.config(s3_bucket, prefix="u/")
    s3["direct"] = getattr(request, "param", False)  # DIRECT below
    return {"storage": {"backend": "s3"}, "s3": s3,
            "auth": {"enabled": True,
                     "tokens": {o: hash_token(t) for o, t in TOKENS.items()}}}


DIRECT = pytest.mark.parametrize("config_overrides", [True], indirect=True, ids=["direct"])


def as_(owner: str, **headers: str) -> dict[str, str]:
    return {**OCTETS, "Authorization": f"Bearer {TOKENS[owner]}", **headers}


def uid_of(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[1]


async def partial(api: Api, data: bytes, *, sent: int | None = None,
                  owner: str = "alice") -> str:
    """A partial upload holding ``data`` (its first ``sent`` bytes); its path."""
    resp = await api.call("POST", "/files/", raw=b"", headers=as_(owner, **{
        "Upload-Length": str(len(data)), "Upload-Concat": "partial"}))
    assert resp.code == 201, resp.body
    path = "/files/" + uid_of(resp.headers["Location"])
    body = data if sent is None else data[:sent]
    if body:
        resp = await api.call("PATCH", path, raw=body, headers=as_(owner, **{
            "Upload-Offset": "0"}))
        assert resp.code == 204, resp.body
    return path


async def final(api: Api, paths: list[str], owner: str = "alice") -> Any:
    return await api.call("POST", "/files/", raw=b"", headers=as_(owner, **{
        "Upload-Concat": "final;" + " ".join(paths)}))


async def status(api: Api, uid: str) -> dict[str, Any]:
    code, doc = await api.json("GET", f"/upload/{uid}/status",
                               headers={"Authorization": f"Bearer {TOKENS['alice']}"})
    assert code == 200, doc
    return doc  # type: ignore[no-any-return]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_plan_every_part_but_the_last_is_5_mib_and_bytes_stay_in_order() -> None:
    five = 5 * MiB
    shapes = [[6 * MiB, 5 * MiB, 7 * MiB], [6 * MiB, MiB, 12 * MiB], [3 * MiB, 2 * MiB, MiB],
              [5 * MiB, 0, 2 * MiB], [MiB], [0], [4 * MiB, 4 * MiB, 4 * MiB, 4 * MiB],
              [five - 1, 1, five + 1], [20 * MiB, 3, 20 * MiB, 3], [1, 1, 1]]
    for sizes in shapes:
        parts = plan_parts(sizes)
        assert [p.number for p in parts] == list(range(1, len(parts) + 1))
        assert all(p.size >= five for p in parts[:-1]), sizes
        flat = [(piece.source, piece.start, piece.end) for p in parts for piece in p.pieces]
        expected, at = [], {}
        for source, start, end in flat:  # contiguous, in source order, nothing twice
            assert start == at.get(source, 0) and end > start, sizes
            at[source] = end
            expected.append(source)
        assert expected == sorted(expected)
        assert {s: at.get(s, 0) for s in range(len(sizes))} == dict(enumerate(sizes))
        for p in parts:
            assert not p.copied or len(p.pieces) == 1
            assert p.copied or p.size < 2 * five  # what is read and sent stays small
    # Sources of 5 MiB and more are copied inside S3, nothing read and sent.
    assert [p.copied for p in plan_parts([6 * MiB, 5 * MiB, 7 * MiB])] == [True] * 3
    # A short partial in the middle takes what it lacks of the next one; the
    # rest of that one is copied.
    mid = plan_parts([6 * MiB, MiB, 12 * MiB])
    assert [(p.copied, p.size) for p in mid] == [(True, 6 * MiB), (False, five),
                                                 (True, 8 * MiB)]
    # Copies are split into even pieces of at most the copy size (>= 5 MiB).
    big = plan_parts([23 * MiB], copy_piece=10 * MiB)
    assert [p.size for p in big] == [7 * MiB + 699050, 7 * MiB + 699051, 7 * MiB + 699051]
    with pytest.raises(UploadError) as info:
        plan_parts([6 * MiB] * 4, max_parts=3)
    assert info.value.code == "too_large"


SHAPES = {
    "all at least 5 MiB": [6 * MiB + 3, 5 * MiB, 7 * MiB + 1],
    "a short one in the middle": [6 * MiB, MiB + 5, 12 * MiB + 7],
    "short ones joined": [3 * MiB, 2 * MiB + 1, 6 * MiB],
    "a zero-length one": [5 * MiB, 0, 2 * MiB],
    "one partial": [7 * MiB],
    "one short partial": [MiB + 1],
}


@pytest.mark.parametrize("sizes", list(SHAPES.values()), ids=list(SHAPES))
async def test_final_is_the_concatenation(api: Api, s3_server: MotoS3, s3_bucket: str,
                                          data_dir: Path, sizes: list[int]) -> None:
    resp = await api.call("OPTIONS", "/files/")
    assert "concatenation" in resp.headers["Tus-Extension"].split(",")
    datas = [os.urandom(n) for n in sizes]
    paths = [await partial(api, d) for d in datas]
    resp = await final(api, paths)
    assert resp.code == 201, resp.body
    fid = uid_of(resp.headers["Location"])
    whole = b"".join(datas)
    doc = await status(api, fid)
    assert doc["status"] == COMPLETED
    assert doc["md5"] == hashlib.md5(whole).hexdigest() and doc["size"] == len(whole)
    # The final holds no chunks of its own: its bytes are its partials'.
    assert (doc["total_chunks"], doc["received"]) == (0, [])
    key = f"u/{fid}_file"
    assert s3_server.get(s3_bucket, key) == whole
    etag = s3_server.client.head_object(Bucket=s3_bucket, Key=key)["ETag"]
    assert etag.strip('"').endswith(f"-{len(plan_parts(sizes))}")  # built by the plan
    # The partials were consumed: rows, objects, tails, multipart uploads.
    for path in paths:
        resp = await api.call("HEAD", path, headers=as_("alice"))
        assert resp.code == 404
    assert s3_server.keys(s3_bucket) == [key]
    assert s3_server.open_uploads(s3_bucket) == []
    assert files_under(data_dir / "tmp") == []
    resp = await api.call("HEAD", f"/files/{fid}", headers=as_("alice"))
    assert resp.headers["Upload-Offset"] == resp.headers["Upload-Length"] == str(len(whole))


async def test_another_owners_partial_is_404_and_an_unfinished_one_400(
        api: Api, s3_server: MotoS3, s3_bucket: str) -> None:
    mine = await partial(api, os.urandom(MiB))
    bobs = await partial(api, os.urandom(MiB), owner="bob")
    resp = await final(api, [mine, bobs])
    assert resp.code == 404, resp.body
    unfinished = await partial(api, os.urandom(6 * MiB), sent=2 * MiB)
    resp = await final(api, [mine, unfinished])
    assert resp.code == 400, resp.body
    assert json.loads(resp.body)["error"]["upload_id"] == uid_of(unfinished)
    # Refused before anything was built: each partial still has its own
    # multipart upload (nothing sealed), and there is no final object.
    assert len(s3_server.open_uploads(s3_bucket)) == 3
    assert [k for k in s3_server.keys(s3_bucket) if not k.endswith(".tail")] == []


class FailingCopy:
    """The storage's S3 calls, with the UploadPartCopy of one part number
    refused as an outage (503)."""

    def __init__(self, runtime: Any, part_number: int) -> None:
        self.real = runtime.storage._call
        self.part_number = part_number
        runtime.storage._call = self

    async def __call__(self, operation: str, **params: Any) -> Any:
        if operation == "upload_part_copy" and params["PartNumber"] == self.part_number:
            raise Unavailable("object storage unavailable")
        return await self.real(operation, **params)


async def failed_final(api: Api, runtime: Any) -> tuple[str, bytes, list[str]]:
    """A final whose first merge failed on its last copied part (short
    partial in the middle: copy, read + send, copy)."""
    datas = [os.urandom(n) for n in (6 * MiB, MiB, 12 * MiB)]
    paths = [await partial(api, d) for d in datas]
    failing = FailingCopy(runtime, part_number=3)
    resp = await final(api, paths)
    runtime.storage._call = failing.real
    assert resp.code == 503, resp.body
    [row] = [u for u in await runtime.store.list_uploads("alice", limit=10)
             if u.tus is not None and u.tus.parts]
    return row.upload_id, b"".join(datas), paths


async def test_a_failed_concat_leaves_nothing_half_done(api: Api, runtime, s3_server: MotoS3,
                                                         s3_bucket: str, data_dir: Path) -> None:
    fid, whole, paths = await failed_final(api, runtime)
    doc = await status(api, fid)
    assert doc["status"] == IN_PROGRESS and doc["error"]["code"] == "unavailable"
    # Its multipart upload was aborted and its temp files removed; the
    # partials stand (sealed into their own objects) for a retry.
    assert s3_server.open_uploads(s3_bucket) == []
    assert files_under(data_dir / "tmp" / fid) == []
    assert sorted(s3_server.keys(s3_bucket)) == sorted(
        f"u/{uid_of(p)}_file" for p in paths)
    for path in paths:
        assert (await api.call("HEAD", path, headers=as_("alice"))).code == 200
    # The retry takes the sealed partials as they are.
    code, doc = await api.json("POST", f"/upload/{fid}/complete",
                               headers={"Authorization": f"Bearer {TOKENS['alice']}"})
    assert code == 200 and doc["md5"] == hashlib.md5(whole).hexdigest(), doc
    assert s3_server.get(s3_bucket, f"u/{fid}_file") == whole
    assert s3_server.open_uploads(s3_bucket) == []


async def test_a_fenced_out_concat_aborts_its_multipart_upload(
        api: Api, runtime, s3_server: MotoS3, s3_bucket: str, caplog) -> None:
    """Merger 1 (its lock lost) is paused before it builds anything; merger 2
    completes the final. Merger 1 then builds its own multipart upload, is
    refused by the fence, and aborts it: only merger 2's object stays."""
    fid, whole, _ = await failed_final(api, runtime)
    version = await runtime.store.begin_merge(fid, (IN_PROGRESS,))
    stale = await runtime.store.get_upload(fid)
    real_abort_open = concat_s3.abort_open
    paused, resume = asyncio.Event(), asyncio.Event()

    async def pausing(storage: Any, key: str) -> None:
        if not paused.is_set():  # merger 1's call
            paused.set()
            await resume.wait()
        await real_abort_open(storage, key)

    concat_s3.abort_open = pausing  # type: ignore[assignment]
    try:
        stale_task = asyncio.ensure_future(runtime.merges._merge_locked(stale, version, None))
        await paused.wait()
        code, doc = await api.json("POST", f"/upload/{fid}/complete",
                                   headers={"Authorization": f"Bearer {TOKENS['alice']}"})
        assert code == 200 and doc["md5"] == hashlib.md5(whole).hexdigest(), doc
        resume.set()
        with pytest.raises(UploadError) as info:
            await stale_task
    finally:
        concat_s3.abort_open = real_abort_open  # type: ignore[assignment]
    assert info.value.code == "conflict"
    assert f"merge superseded {fid} version {version}" in caplog.text
    assert s3_server.open_uploads(s3_bucket) == []
    assert s3_server.get(s3_bucket, f"u/{fid}_file") == whole
    row = await runtime.store.get_upload(fid)
    assert (row.status, row.merge_version) == (COMPLETED, version + 1)


async def crash_leftovers(runtime: Any, s3_server: MotoS3, s3_bucket: str,
                          fid: str, data_dir: Path) -> None:
    """What a process killed mid-concat leaves: the row merging, a multipart
    upload at the final's key with some parts, a temp file."""
    assert await runtime.store.begin_merge(fid, (IN_PROGRESS,)) is not None
    key = f"u/{fid}_file"
    mpu = s3_server.client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
    s3_server.client.upload_part(Bucket=s3_bucket, Key=key, UploadId=mpu, PartNumber=1,
                                 Body=os.urandom(5 * MiB))
    temp = data_dir / "tmp" / fid / "concat_2_2.0123456789ab.part"
    temp.parent.mkdir(parents=True, exist_ok=True)
    temp.write_bytes(b"x" * 100)


async def test_recovery_at_start_drops_what_a_crashed_concat_left(
        api: Api, runtime, s3_server: MotoS3, s3_bucket: str, data_dir: Path) -> None:
    fid, whole, _ = await failed_final(api, runtime)
    await crash_leftovers(runtime, s3_server, s3_bucket, fid, data_dir)
    assert await return_interrupted_merges(runtime.service) == 1
    assert s3_server.open_uploads(s3_bucket) == []
    assert files_under(data_dir / "tmp" / fid) == []
    assert (await runtime.store.get_upload(fid)).status == IN_PROGRESS
    code, doc = await api.json("POST", f"/upload/{fid}/complete",
                               headers={"Authorization": f"Bearer {TOKENS['alice']}"})
    assert code == 200 and doc["md5"] == hashlib.md5(whole).hexdigest(), doc


async def test_expiry_removes_a_crashed_final_and_its_sealed_partials(
        api: Api, runtime, config, s3_server: MotoS3, s3_bucket: str, data_dir: Path) -> None:
    fid, _, _ = await failed_final(api, runtime)
    await crash_leftovers(runtime, s3_server, s3_bucket, fid, data_dir)
    await runtime.store.set_status(fid, IN_PROGRESS, ("merging",))  # as another start did
    old = ts_to_text(utcnow() - timedelta(seconds=config.expiry.ttl + 60))
    await runtime.store.db.execute("UPDATE uploads SET updated_at = ?", (old,))
    await runtime.store.db.execute("UPDATE upload_chunks SET received_at = ?", (old,))
    report = await Expirer(config, runtime.service, runtime.metrics).sweep()
    assert report.expired_count == 4 and report.failed == []  # the final and 3 partials
    assert s3_server.keys(s3_bucket) == []
    assert s3_server.open_uploads(s3_bucket) == []
    assert files_under(data_dir / "tmp") == []


async def test_republish_after_a_crash_skips_a_stale_unfinished_attempt(
        api: Api, runtime, s3_server: MotoS3, s3_bucket: str) -> None:
    """The process died between recording ``completed`` and completing the
    multipart upload, and a stale merger's unfinished one is open at the same
    key (it created it after this merge aborted the open ones). The download
    publishes the complete one, never the stale one."""
    datas = [os.urandom(n) for n in (6 * MiB, 5 * MiB)]
    paths = [await partial(api, d) for d in datas]
    real_abort_open, real_publish = concat_s3.abort_open, runtime.storage.publish
    stale_created = False

    async def stale_after_abort(storage: Any, key: str) -> None:
        nonlocal stale_created
        await real_abort_open(storage, key)
        mpu = s3_server.client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
        s3_server.client.upload_part(Bucket=s3_bucket, Key=key, UploadId=mpu, PartNumber=1,
                                     Body=os.urandom(5 * MiB))
        stale_created = True

    async def crash(staged: Any) -> None:
        raise RuntimeError("killed before publishing")

    concat_s3.abort_open = stale_after_abort  # type: ignore[assignment]
    runtime.storage.publish = crash
    try:
        resp = await final(api, paths)
    finally:
        concat_s3.abort_open = real_abort_open  # type: ignore[assignment]
        runtime.storage.publish = real_publish
    assert resp.code == 500 and stale_created
    [row] = [u for u in await runtime.store.list_uploads("alice", status=COMPLETED)]
    assert len(s3_server.open_uploads(s3_bucket)) == 2  # the stale one listed first
    resp = await api.call("HEAD", f"/files/{row.upload_id}",
                          headers={"Authorization": f"Bearer {TOKENS['alice']}"})
    assert resp.code == 200 and resp.headers["Content-Length"] == str(11 * MiB)
    assert s3_server.get(s3_bucket, f"u/{row.upload_id}_file") == b"".join(datas)
    assert s3_server.open_uploads(s3_bucket) == []


def read_back(caplog: Any) -> int:
    """Bytes the last concat read back from the object storage (its log line)."""
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("concat of")]
    return int(line.split(" of them back from it")[0].rsplit("(", 1)[1])


async def test_staged_copies_are_read_and_the_rest_read_back(
        api: Api, data_dir: Path, s3_server: MotoS3, s3_bucket: str, caplog) -> None:
    """Partials whose chunks this instance staged are hashed from disk; one
    whose chunks another instance received (its copies are not here) is read
    back from S3, once."""
    caplog.set_level("INFO", logger="uploader.merge")
    datas = [os.urandom(n) for n in (6 * MiB, 2 * MiB, 7 * MiB)]
    paths = [await partial(api, d) for d in datas]
    for copy in (data_dir / "tmp" / uid_of(paths[1])).glob("chunk_*"):
        copy.unlink()
    resp = await final(api, paths)
    assert resp.code == 201, resp.body
    fid = uid_of(resp.headers["Location"])
    whole = b"".join(datas)
    assert (await status(api, fid))["md5"] == hashlib.md5(whole).hexdigest()
    assert s3_server.get(s3_bucket, f"u/{fid}_file") == whole
    assert read_back(caplog) == 2 * MiB


@DIRECT
async def test_direct_mode_reads_every_partial_back(api: Api, s3_server: MotoS3,
                                                     s3_bucket: str, caplog) -> None:
    """In direct mode a part may have come from the client, not through this
    server: the staged copies are no proof of the bytes, the objects are."""
    caplog.set_level("INFO", logger="uploader.merge")
    datas = [os.urandom(n) for n in (5 * MiB, MiB, 6 * MiB)]
    paths = [await partial(api, d) for d in datas]
    resp = await final(api, paths)
    assert resp.code == 201, resp.body
    fid = uid_of(resp.headers["Location"])
    whole = b"".join(datas)
    assert (await status(api, fid))["md5"] == hashlib.md5(whole).hexdigest()
    assert s3_server.get(s3_bucket, f"u/{fid}_file") == whole
    assert read_back(caplog) == len(whole)
    assert s3_server.keys(s3_bucket) == [f"u/{fid}_file"]


async def test_a_partial_is_sealed_under_its_own_lock(api: Api, runtime) -> None:
    """A chunk commit holds the upload's lock across its UploadPart and its
    staged copy's rename: the seal holds it too, so the copies it then reads
    are the sealed parts."""
    datas = [os.urandom(n) for n in (5 * MiB, MiB)]
    paths = [await partial(api, d) for d in datas]
    real_seal, held = concat_s3._seal, []

    async def checking(storage: Any, upload: Any) -> Any:
        try:
            async with runtime.merges.locks.upload(upload.upload_id, wait=0):
                held.append(False)
        except LockTimeout:
            held.append(True)
        return await real_seal(storage, upload)

    concat_s3._seal = checking  # type: ignore[assignment]
    try:
        resp = await final(api, paths)
    finally:
        concat_s3._seal = real_seal  # type: ignore[assignment]
    assert resp.code == 201, resp.body
    assert held == [True, True]
