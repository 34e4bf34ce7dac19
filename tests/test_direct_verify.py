"""Direct uploads verified by their parts (``s3.direct_verify: parts``, the
default) against moto's real S3 HTTP API: complete reads nothing back, a part
replaced behind the server's back is caught, the claimed whole-file MD5 is
shown as a claim; readback mode still reads the object once."""

from __future__ import annotations

import random
from typing import Any

import pytest
import tornado.httpclient

from support import MiB, Api, chunks_of, md5
from support.s3 import MotoS3
from uploader.storage.s3_verify import multipart_etag

CS = 5 * MiB  # S3's smallest part


@pytest.fixture
def direct_verify(request: Any) -> str:
    return getattr(request, "param", "parts")


@pytest.fixture
def config_overrides(s3_server: MotoS3, s3_bucket: str,
                     direct_verify: str) -> dict[str, dict[str, Any]]:
    return {"storage": {"backend": "s3"},
            "s3": s3_server.config(s3_bucket, direct=True, direct_verify=direct_verify)}


@pytest.fixture
def s3_calls(runtime: Any) -> list[str]:
    """Every S3 operation the server calls from here on, by name."""
    storage, calls = runtime.storage, []
    real = storage._call

    async def counted(operation: str, **params: Any) -> Any:
        calls.append(operation)
        return await real(operation, **params)
    storage._call = counted
    return calls


async def put(url: str, body: bytes, headers: dict[str, str]) -> int:
    resp = await tornado.httpclient.AsyncHTTPClient().fetch(
        url, method="PUT", body=body, headers=headers, raise_error=False, request_timeout=120)
    return resp.code


async def upload_parts(api: Api, uid: str, parts: list[bytes]) -> None:
    code, doc = await api.json("POST", f"/upload/{uid}/urls", {
        "parts": [{"index": i, "md5": md5(p)} for i, p in enumerate(parts)]})
    assert code == 200, doc
    for signed in doc["parts"]:
        assert signed["headers"] == {"Content-MD5": signed["headers"]["Content-MD5"]}
        assert await put(signed["url"], parts[signed["index"]], signed["headers"]) == 200


async def test_parts_mode_completes_without_reading_the_object(
        api: Api, runtime: Any, s3_server: MotoS3, s3_bucket: str, s3_calls: list[str]) -> None:
    data = random.randbytes(2 * CS + 99)
    parts = chunks_of(data, CS)
    uid = (await api.init(len(data), CS, md5=md5(data)))["upload_id"]
    await upload_parts(api, uid, parts)
    code, done = await api.complete(uid, md5(data))
    assert code == 200, done
    assert done["status"] == "completed" and done["verified"] == "parts"
    # The server never hashed the whole file: md5 says nothing; the client's
    # MD5 is shown for what it is, a claim.
    assert done["md5"] is None and done["md5_claimed"] == md5(data)
    assert "get_object" not in s3_calls and "complete_multipart_upload" in s3_calls
    head = s3_server.client.head_object(Bucket=s3_bucket, Key=f"{uid}_f.bin")
    assert head["ETag"].strip('"') == multipart_etag([md5(p) for p in parts])
    assert s3_server.get(s3_bucket, f"{uid}_f.bin") == data
    assert runtime.metrics.bytes_received._value.get() == 0
    # Nor is the claim the download's validator: the id is (the file never changes).
    head = await api.call("HEAD", f"/files/{uid}")
    assert head.code == 200 and head.headers["ETag"] == f'"{uid}"'
    # Status shows the same; a repeated complete with the same claim is 200,
    # with another one 422 (two claims never both pass).
    assert (await api.status(uid))["md5_claimed"] == md5(data)
    assert (await api.complete(uid, md5(data)))[0] == 200
    code, err = await api.complete(uid, md5(b"other"))
    assert code == 422 and "claimed with another MD5" in err["error"]["message"]


async def test_parts_mode_without_a_claim(api: Api, s3_calls: list[str]) -> None:
    data = random.randbytes(CS + 5)
    uid = (await api.init(len(data), CS))["upload_id"]
    await upload_parts(api, uid, chunks_of(data, CS))
    code, done = await api.complete(uid)
    assert code == 200 and done["md5"] is None and "md5_claimed" not in done
    assert done["verified"] == "parts" and "get_object" not in s3_calls


async def test_parts_mode_needs_each_parts_md5(api: Api) -> None:
    uid = (await api.init(2 * CS, CS))["upload_id"]
    for path, body in ((f"/upload/{uid}/urls", {"parts": [{"index": 0, "md5": "0" * 32},
                                                         {"index": 1}]}),
                       (f"/upload/{uid}/chunk/1/url", None)):
        code, err = await api.json("POST", path, body)
        assert code == 400 and err["error"]["code"] == "invalid_request", err
        assert "md5 is required" in err["error"]["message"] and err["error"]["index"] == 1


async def test_a_part_replaced_behind_the_servers_back_is_caught(
        api: Api, s3_server: MotoS3, s3_bucket: str) -> None:
    data = random.randbytes(3 * CS)
    parts = chunks_of(data, CS)
    uid = (await api.init(len(data), CS, md5=md5(data)))["upload_id"]
    await upload_parts(api, uid, parts)
    # Someone with the bucket's credentials PUTs other bytes of the same size
    # as part 2 (index 1): sizes agree, the ETag does not.
    [open_upload] = s3_server.open_uploads(s3_bucket)
    forged = random.randbytes(CS)
    s3_server.client.upload_part(Bucket=s3_bucket, Key=open_upload["Key"], PartNumber=2,
                                 UploadId=open_upload["UploadId"], Body=forged)
    code, err = await api.complete(uid, md5(data))
    assert code == 422, err
    assert err["error"]["code"] == "checksum_mismatch" and err["error"]["parts"] == [1]
    assert "signed for" in err["error"]["message"]
    status = await api.status(uid)
    assert status["status"] == "in_progress" and status["error"]["code"] == "checksum_mismatch"
    assert s3_server.keys(s3_bucket) == []  # nothing assembled
    # The multipart upload stayed open: the right bytes again, and it completes.
    code, one = await api.json("POST", f"/upload/{uid}/chunk/1/url", {"md5": md5(parts[1])})
    assert code == 200 and await put(one["url"], parts[1], one["headers"]) == 200
    code, done = await api.complete(uid, md5(data))
    assert code == 200 and done["verified"] == "parts", done
    assert s3_server.get(s3_bucket, f"{uid}_f.bin") == data


async def test_a_part_never_signed_is_caught(api: Api, s3_server: MotoS3,
                                             s3_bucket: str) -> None:
    data = random.randbytes(CS + 7)
    parts = chunks_of(data, CS)
    uid = (await api.init(len(data), CS))["upload_id"]
    code, doc = await api.json("POST", f"/upload/{uid}/urls",
                               {"parts": [{"index": 0, "md5": md5(parts[0])}]})
    assert code == 200 and await put(doc["parts"][0]["url"], parts[0],
                                     doc["parts"][0]["headers"]) == 200
    [open_upload] = s3_server.open_uploads(s3_bucket)
    s3_server.client.upload_part(Bucket=s3_bucket, Key=open_upload["Key"], PartNumber=2,
                                 UploadId=open_upload["UploadId"], Body=parts[1])
    code, err = await api.complete(uid)
    assert code == 422 and err["error"]["parts"] == [1], err


@pytest.mark.parametrize("direct_verify", ["readback"], indirect=True)
async def test_readback_mode_reads_the_object_once(api: Api, s3_calls: list[str]) -> None:
    data = random.randbytes(CS + 3)
    uid = (await api.init(len(data), CS))["upload_id"]
    await upload_parts(api, uid, chunks_of(data, CS))
    code, done = await api.complete(uid, md5(data))
    assert code == 200 and done["md5"] == md5(data), done
    assert "verified" not in done and "md5_claimed" not in done
    assert s3_calls.count("get_object") == 1
