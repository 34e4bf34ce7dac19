"""The REST API against an S3-backed app (moto's real S3 HTTP API).

What S3 holds is checked from outside with a plain botocore client: open
multipart uploads, their parts, the finished objects.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import tornado.httpclient

from support import MiB, Api, chunks_of, md5
from support.s3 import MotoS3
from uploader.cleanup import Expirer
from uploader.handlers.page import page_settings
from uploader.models import utcnow
from uploader.store.rows import ts_to_text

CS = 5 * MiB  # S3's smallest part


@pytest.fixture
def config_overrides(request: Any, s3_server: MotoS3,
                     s3_bucket: str) -> dict[str, dict[str, Any]]:
    s3 = s3_server.config(s3_bucket, prefix="u/")
    s3["direct"] = getattr(request, "param", False)  # DIRECT below
    # Direct uploads here are read back at complete; verified by their parts
    # (the default): tests/test_direct_verify.py.
    s3["direct_verify"] = "readback"
    return {"storage": {"backend": "s3"}, "s3": s3, "limits": {"max_chunks": 20_000}}


# The app is wired from the config at start: direct mode is chosen up front.
DIRECT = pytest.mark.parametrize("config_overrides", [True], indirect=True, ids=["direct"])


async def upload_all(api: Api, upload_id: str, parts: list[bytes], parallel: int = 4) -> None:
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> None:
        async with gate:
            code, doc = await api.put_chunk(upload_id, i, parts[i], md5(parts[i]))
            assert code == 200, doc

    order = list(range(len(parts)))
    random.shuffle(order)
    await asyncio.gather(*(one(i) for i in order))


async def fetch(url: str, **kw: Any) -> tornado.httpclient.HTTPResponse:
    return await tornado.httpclient.AsyncHTTPClient().fetch(url, raise_error=False,
                                                            request_timeout=120, **kw)


async def test_full_upload_and_downloads(api: Api, s3_server: MotoS3, s3_bucket: str,
                                         config, data_dir: Path) -> None:
    data = random.randbytes(2 * CS + 1234)
    up = await api.init(len(data), CS, filename="big file.bin")
    uid = up["upload_id"]
    assert "direct" not in up  # proxy mode: nothing to advertise
    [open_upload] = s3_server.open_uploads(s3_bucket)  # created at init
    assert open_upload["Key"] == f"u/{uid}_big file.bin"
    await upload_all(api, uid, chunks_of(data, CS))
    assert (await api.status(uid))["received"] == [0, 1, 2]
    code, done = await api.complete(uid, md5(data))
    assert code == 200, done
    assert done["status"] == "completed" and done["md5"] == md5(data)
    assert s3_server.open_uploads(s3_bucket) == []
    assert s3_server.get(s3_bucket, open_upload["Key"]) == data
    assert not (data_dir / "tmp" / uid).exists()  # staged copies gone

    # download: redirect (default) to a presigned GET that serves ranges too
    resp = await fetch(f"http://127.0.0.1:{api.port}{done['location']}", follow_redirects=False)
    assert resp.code == 302 and resp.headers["Location"].startswith(s3_server.endpoint)
    direct = await fetch(resp.headers["Location"])
    assert direct.code == 200 and direct.body == data
    part = await fetch(resp.headers["Location"], headers={"Range": "bytes=100-199"})
    assert part.code == 206 and part.body == data[100:200]

    # download: streamed through the server, with Range
    config.s3.download = "stream"
    whole = await api.call("GET", done["location"])
    assert whole.code == 200 and whole.body == data
    ranged = await api.call("GET", done["location"], headers={"Range": f"bytes={CS - 5}-{CS + 4}"})
    assert ranged.code == 206 and ranged.body == data[CS - 5:CS + 5]
    head = await api.call("HEAD", done["location"])
    assert head.code == 200 and int(head.headers["Content-Length"]) == len(data)

    assert (await api.call("DELETE", f"/upload/{uid}")).code == 204
    assert s3_server.keys(s3_bucket) == []


async def test_whole_file_md5_mismatch_then_retry(api: Api, s3_server: MotoS3,
                                                  s3_bucket: str) -> None:
    data = random.randbytes(CS + 10)
    up = await api.init(len(data), CS)
    uid = up["upload_id"]
    await upload_all(api, uid, chunks_of(data, CS))
    code, err = await api.complete(uid, md5(b"something else"))
    assert code == 422 and err["error"]["actual"] == md5(data)
    status = await api.status(uid)
    assert status["status"] == "in_progress" and status["received"] == [0, 1]
    assert len(s3_server.open_uploads(s3_bucket)) == 1  # still open for the retry
    assert s3_server.keys(s3_bucket) == []
    code, done = await api.complete(uid, md5(data))
    assert code == 200 and done["md5"] == md5(data)


async def test_s3_limits_at_init(api: Api, s3_server: MotoS3, s3_bucket: str) -> None:
    code, err = await api.json("POST", "/upload/init",
                               {"filename": "a", "size": 3 * MiB, "chunk_size": MiB})
    assert code == 400 and err["error"]["code"] == "invalid_request"
    assert err["error"]["min_part_size"] == CS
    code, err = await api.json("POST", "/upload/init",
                               {"filename": "a", "size": 10_001 * CS, "chunk_size": CS})
    assert code == 400 and err["error"]["max_parts"] == 10_000
    # One chunk may be smaller than a part: it is the last one.
    small = await api.init(1000, MiB)
    assert small["total_chunks"] == 1
    assert len(s3_server.open_uploads(s3_bucket)) == 1  # refused inits made none


async def test_zero_byte_file(api: Api, s3_server: MotoS3, s3_bucket: str, config) -> None:
    up = await api.init(0, CS, filename="empty")
    code, done = await api.complete(up["upload_id"])
    assert code == 200 and done["md5"] == md5(b"")
    config.s3.download = "stream"
    resp = await api.call("GET", done["location"])
    assert resp.code == 200 and resp.body == b""


async def test_delete_aborts_the_multipart_upload(api: Api, s3_server: MotoS3,
                                                  s3_bucket: str, data_dir: Path) -> None:
    up = await api.init(2 * CS, CS)
    uid = up["upload_id"]
    code, _ = await api.put_chunk(uid, 0, random.randbytes(CS))
    assert code == 200
    [open_upload] = s3_server.open_uploads(s3_bucket)
    assert (data_dir / "tmp" / uid / "chunk_0").exists()
    assert (await api.call("DELETE", f"/upload/{uid}")).code == 204
    assert s3_server.open_uploads(s3_bucket) == []
    with pytest.raises(s3_server.client.exceptions.NoSuchUpload):
        s3_server.client.list_parts(Bucket=s3_bucket, Key=open_upload["Key"],
                                    UploadId=open_upload["UploadId"])
    assert not (data_dir / "tmp" / uid).exists()


async def test_expired_upload_leaves_no_parts(api: Api, runtime, config, s3_server: MotoS3,
                                              s3_bucket: str) -> None:
    up = await api.init(2 * CS, CS)
    uid = up["upload_id"]
    await api.put_chunk(uid, 1, random.randbytes(CS))
    keep = await api.init(2 * CS, CS)  # recent: must survive the sweep
    # Age the first upload past the TTL, in the database itself.
    old = ts_to_text(utcnow() - timedelta(seconds=config.expiry.ttl + 60))
    await runtime.store.db.execute("UPDATE uploads SET updated_at = ? WHERE upload_id = ?",
                                   (old, uid))
    await runtime.store.db.execute("UPDATE upload_chunks SET received_at = ? "
                                   "WHERE upload_id = ?", (old, uid))
    report = await Expirer(config, runtime.service, runtime.metrics).sweep()
    assert report.expired == [uid] and report.failed == []
    [left] = s3_server.open_uploads(s3_bucket)
    assert left["Key"].startswith(f"u/{keep['upload_id']}_")
    code, _ = await api.json("GET", f"/upload/{uid}/status")
    assert code == 404


async def test_orphaned_multipart_upload_is_swept(api: Api, runtime, config,
                                                  s3_server: MotoS3, s3_bucket: str) -> None:
    """An init that died between CreateMultipartUpload and its row."""
    runtime.storage.orphan_age = 0
    s3_server.client.create_multipart_upload(Bucket=s3_bucket, Key="u/" + "ab" * 16 + "_x")
    report = await Expirer(config, runtime.service, runtime.metrics).sweep()
    assert report.orphans == ["ab" * 16]
    assert s3_server.open_uploads(s3_bucket) == []


@DIRECT
@pytest.mark.parametrize("with_md5", [True, False])
async def test_direct_upload_end_to_end(api: Api, runtime, config, s3_server: MotoS3,
                                        s3_bucket: str, with_md5: bool) -> None:
    assert page_settings(runtime.config, runtime.features, False)["direct_upload"] is True
    page = await api.call("GET", "/")
    assert f"connect-src 'self' {s3_server.endpoint};" in page.headers["Content-Security-Policy"]
    data = random.randbytes(2 * CS + 77)
    up = await api.init(len(data), CS, md5=md5(data))
    uid = up["upload_id"]
    assert up["direct"] is True
    parts = chunks_of(data, CS)
    for index in (2, 0, 1):
        body = {"md5": md5(parts[index])} if with_md5 else None
        code, signed = await api.json("POST", f"/upload/{uid}/chunk/{index}/url", body)
        assert code == 200, signed
        assert signed["method"] == "PUT" and signed["size"] == len(parts[index])
        assert signed["expires_in"] == config.s3.presign_expiry
        assert ("Content-MD5" in signed["headers"]) is with_md5
        signed_headers = parse_qs(urlsplit(signed["url"]).query)["X-Amz-SignedHeaders"][0]
        # With an MD5 the signature covers Content-MD5, so S3 takes only
        # those bytes (moto checks neither signatures nor Content-MD5).
        assert ("content-md5" in signed_headers.split(";")) is with_md5
        resp = await fetch(signed["url"], method="PUT", body=parts[index],
                           headers=signed["headers"])
        assert resp.code == 200 and resp.headers["ETag"].strip('"') == md5(parts[index])
        if index == 2:
            # Not recorded by any client call: status reads it from ListParts.
            status = await api.status(uid)
            assert status["received"] == [2] and status["direct"] is True
    code, done = await api.complete(uid)
    assert code == 200, done
    assert done["md5"] == md5(data)
    assert s3_server.get(s3_bucket, f"u/{uid}_f.bin") == data
    assert s3_server.open_uploads(s3_bucket) == []


@DIRECT
async def test_direct_status_ignores_wrong_size_parts(api: Api, runtime, config) -> None:
    up = await api.init(CS + 10, CS)
    uid = up["upload_id"]
    code, signed = await api.json("POST", f"/upload/{uid}/chunk/0/url")
    resp = await fetch(signed["url"], method="PUT", body=b"too short", headers=signed["headers"])
    assert resp.code == 200  # S3 takes any part; the size check is ours
    assert (await api.status(uid))["received"] == []
    code, err = await api.complete(uid)
    assert code == 409 and err["error"]["missing"] == [0, 1]
    code, err = await api.json("POST", f"/upload/{uid}/chunk/2/url")
    assert code == 400 and err["error"]["code"] == "invalid_request"


async def test_direct_urls_need_direct_mode(api: Api) -> None:
    up = await api.init(CS, CS)
    code, err = await api.json("POST", f"/upload/{up['upload_id']}/chunk/0/url")
    assert code == 404 and err["error"]["code"] == "not_found"


async def direct_put_all(api: Api, uid: str, parts: list[bytes]) -> None:
    for index, part in enumerate(parts):
        code, signed = await api.json("POST", f"/upload/{uid}/chunk/{index}/url",
                                      {"md5": md5(part)})
        assert code == 200, signed
        resp = await fetch(signed["url"], method="PUT", body=part, headers=signed["headers"])
        assert resp.code == 200


@DIRECT
async def test_direct_md5_mismatch_then_retry_or_delete(api: Api, runtime, config,
                                                        s3_server: MotoS3,
                                                        s3_bucket: str) -> None:
    """Direct parts can be hashed only once assembled: a refused MD5 leaves
    the object, which a later complete adopts or a DELETE removes."""
    data = random.randbytes(CS + 10)
    kept = ""
    for then_delete in (False, True):
        up = await api.init(len(data), CS)
        uid = up["upload_id"]
        await direct_put_all(api, uid, chunks_of(data, CS))
        code, err = await api.complete(uid, md5(b"wrong"))
        assert code == 422 and err["error"]["actual"] == md5(data)
        status = await api.status(uid)
        assert status["status"] == "in_progress" and status["received"] == [0, 1]
        code, _ = await api.json("GET", f"/files/{uid}")
        assert code == 404  # the assembled object is not served
        if then_delete:
            assert (await api.call("DELETE", f"/upload/{uid}")).code == 204
            assert s3_server.keys(s3_bucket) == [f"u/{kept}_f.bin"]
        else:
            code, done = await api.complete(uid, md5(data))
            assert code == 200 and done["md5"] == md5(data)
            kept = uid
    assert s3_server.open_uploads(s3_bucket) == []
