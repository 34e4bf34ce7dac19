"""Direct mode's server side against moto's real S3 HTTP API: part URLs in
batches, part URLs refused once the upload takes no more chunks, the bucket's
CORS rules checked at start, the page's CSP, signed links that redirect to
the object store."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest
import tornado.httpclient

from support import MiB, Api, chunks_of, md5
from support.s3 import MotoS3
from uploader.models import ABORTED
from uploader.storage.s3_checks import cors_problems

CS = 5 * MiB  # S3's smallest part
GOOD_CORS = [{"AllowedOrigins": ["https://uploads.example.com"], "AllowedMethods": ["PUT", "GET"],
              "AllowedHeaders": ["Content-MD5", "Content-Type"], "ExposeHeaders": ["ETag"],
              "MaxAgeSeconds": 3600}]


@pytest.fixture
def bucket_cors(request: Any) -> list[dict[str, Any]] | None:
    """The bucket's CORS rules before the server starts (None: none at all)."""
    return getattr(request, "param", GOOD_CORS)


@pytest.fixture
def direct(request: Any) -> bool:
    return getattr(request, "param", True)


@pytest.fixture
def direct_verify(request: Any) -> str:
    return getattr(request, "param", "parts")


@pytest.fixture
def more_config(request: Any) -> dict[str, dict[str, Any]]:
    return getattr(request, "param", {})


@pytest.fixture
def config_overrides(s3_server: MotoS3, s3_bucket: str, bucket_cors: Any, direct: bool,
                     direct_verify: str,
                     more_config: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    if bucket_cors is not None:
        s3_server.client.put_bucket_cors(Bucket=s3_bucket,
                                         CORSConfiguration={"CORSRules": bucket_cors})
    return {"storage": {"backend": "s3"},
            "s3": s3_server.config(s3_bucket, direct=direct, direct_verify=direct_verify),
            **more_config}


async def put(url: str, body: bytes, headers: dict[str, str]) -> int:
    resp = await tornado.httpclient.AsyncHTTPClient().fetch(
        url, method="PUT", body=body, headers=headers, raise_error=False, request_timeout=120)
    return resp.code


async def sign(api: Api, uid: str, parts: list[dict[str, Any]]) -> tuple[int, Any]:
    return await api.json("POST", f"/upload/{uid}/urls", {"parts": parts})


# Readback: parts without an MD5 may be signed (parts mode needs them all:
# tests/test_direct_verify.py), complete reads the object once for its MD5.
@pytest.mark.parametrize("direct_verify", ["readback"], indirect=True)
async def test_a_batch_of_part_urls_uploads_the_file(api: Api, runtime, s3_server: MotoS3,
                                                     s3_bucket: str) -> None:
    data = random.randbytes(3 * CS + 99)
    parts = chunks_of(data, CS)
    uid = (await api.init(len(data), CS))["upload_id"]
    # Any subset, any order, with or without MD5: one request signs them all.
    code, doc = await sign(api, uid, [{"index": 3, "md5": md5(parts[3])}, {"index": 0},
                                      {"index": 2, "md5": md5(parts[2])}])
    assert code == 200, doc
    assert [p["index"] for p in doc["parts"]] == [3, 0, 2]
    assert [p["size"] for p in doc["parts"]] == [99, CS, CS]
    assert [("Content-MD5" in p["headers"]) for p in doc["parts"]] == [True, False, True]
    assert all(p["method"] == "PUT" and p["expires_in"] == 300 for p in doc["parts"])
    for signed in doc["parts"]:
        assert await put(signed["url"], parts[signed["index"]], signed["headers"]) == 200
    code, one = await api.json("POST", f"/upload/{uid}/chunk/1/url", {"md5": md5(parts[1])})
    assert code == 200 and await put(one["url"], parts[1], one["headers"]) == 200
    assert (await api.status(uid))["received"] == [0, 1, 2, 3]  # from ListParts
    code, done = await api.complete(uid, md5(data))
    assert code == 200 and done["md5"] == md5(data)
    assert s3_server.get(s3_bucket, f"{uid}_f.bin") == data
    assert runtime.metrics.part_urls._value.get() == 4
    # Nothing crossed this server.
    assert runtime.metrics.bytes_received._value.get() == 0


@pytest.mark.parametrize("parts, message", [
    (None, "parts must be a non-empty list"),
    ([], "parts must be a non-empty list"),
    ([1, 2], "each part must be an object"),
    ([{"md5": "0" * 32}], "index is required"),
    ([{"index": "1"}], "index must be an integer"),
    ([{"index": -1}], "distinct and >= 0"),
    ([{"index": 0}, {"index": 0}], "distinct and >= 0"),
    ([{"index": 0, "md5": "xyz"}], "md5 must be 32 hexadecimal"),
    ([{"index": 2}], "index out of range"),
    ([{"index": i} for i in range(101)], "at most 100 parts per request"),
])
async def test_bad_batches_are_refused_by_name(api: Api, parts: Any, message: str) -> None:
    uid = (await api.init(2 * CS, CS))["upload_id"]
    code, err = await api.json("POST", f"/upload/{uid}/urls",
                               {"parts": parts} if parts is not None else {})
    assert code == 400 and err["error"]["code"] == "invalid_request", err
    assert message in err["error"]["message"]
    assert err["error"]["retryable"] is False


@pytest.mark.parametrize("direct_verify", ["readback"], indirect=True)
async def test_part_urls_are_refused_once_the_upload_takes_no_chunks(api: Api, runtime) -> None:
    data = random.randbytes(CS + 10)
    parts = chunks_of(data, CS)

    async def refusal(uid: str) -> tuple[dict[str, Any], dict[str, Any]]:
        code, batch = await sign(api, uid, [{"index": 0}])
        assert code == 409, batch
        code, single = await api.json("POST", f"/upload/{uid}/chunk/0/url")
        assert code == 409, single
        return batch["error"], single["error"]

    async def uploaded() -> str:
        uid = (await api.init(len(data), CS))["upload_id"]
        code, doc = await sign(api, uid, [{"index": i, "md5": md5(p)} for i, p in enumerate(parts)])
        assert code == 200, doc
        for signed in doc["parts"]:
            assert await put(signed["url"], parts[signed["index"]], signed["headers"]) == 200
        return uid

    # Merging: the merge may yet fail and reopen the upload, so try again later.
    uid = await uploaded()
    assert await runtime.store.begin_merge(uid, ("in_progress",)) is not None
    for err in await refusal(uid):
        assert err["code"] == "conflict" and err["status"] == "merging" and err["retryable"]

    # Completed: final.
    uid = await uploaded()
    assert (await api.complete(uid, md5(data)))[0] == 200
    for err in await refusal(uid):
        assert err["code"] == "conflict" and err["status"] == "completed"
        assert err["retryable"] is False

    # Aborted (a delete in progress): final.
    uid = await uploaded()
    await runtime.store.set_status(uid, ABORTED, ("in_progress",))
    for err in await refusal(uid):
        assert err["status"] == "aborted" and err["retryable"] is False

    # A refused whole-file MD5 leaves the upload in_progress, but its parts
    # were assembled into the object: a part PUT would fail at the store, so
    # no URL is handed out (the bug of issue 17).
    uid = await uploaded()
    code, err = await api.complete(uid, md5(b"other bytes"))
    assert code == 422
    assert (await api.status(uid))["status"] == "in_progress"
    for err in await refusal(uid):
        assert err["code"] == "conflict" and err["retryable"] is False
        assert "start a new upload" in err["message"]


@pytest.mark.parametrize("more_config", [{"ratelimit": {"owner_rate": 0.001, "owner_burst": 3}}],
                         indirect=True)
async def test_part_urls_share_the_chunk_puts_rate_limit(api: Api) -> None:
    uid = (await api.init(2 * CS, CS))["upload_id"]  # one token
    assert (await sign(api, uid, [{"index": 0, "md5": "0" * 32}]))[0] == 200
    assert (await api.json("POST", f"/upload/{uid}/chunk/1/url", {"md5": "1" * 32}))[0] == 200
    resp = await api.call("POST", f"/upload/{uid}/urls", {"parts": [{"index": 1, "md5": "1" * 32}]})
    assert resp.code == 429 and int(resp.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("direct", [False], indirect=True)
async def test_proxy_mode_has_no_part_urls_and_no_store_in_the_csp(api: Api,
                                                                   s3_server: MotoS3) -> None:
    uid = (await api.init(CS, CS))["upload_id"]
    code, err = await sign(api, uid, [{"index": 0}])
    assert code == 404 and err["error"]["code"] == "not_found"
    page = await api.call("GET", "/")
    csp = page.headers["Content-Security-Policy"]
    assert "connect-src 'self';" in csp and s3_server.endpoint not in csp


async def test_direct_mode_allows_the_store_in_the_csp(api: Api, s3_server: MotoS3) -> None:
    page = await api.call("GET", "/")
    assert f"connect-src 'self' {s3_server.endpoint};" in page.headers["Content-Security-Policy"]


def s3_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.get_records("setup")
            if r.name == "uploader.storage" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("bucket_cors, expected", [
    (None, "the bucket has no CORS rules"),
    ([{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}], "no CORS rule of the bucket allows PUT"),
    ([{"AllowedOrigins": ["*"], "AllowedMethods": ["PUT"], "AllowedHeaders": ["Content-Type"]}],
     "allows the Content-MD5 header"),
    # ETag is not needed: the server reads the parts with ListParts.
    ([{"AllowedOrigins": ["*"], "AllowedMethods": ["PUT"], "AllowedHeaders": ["*"]}], None),
    (GOOD_CORS, None),
], indirect=["bucket_cors"], ids=["none", "no-put", "no-md5-header", "no-etag", "good"])
async def test_the_buckets_cors_rules_are_checked_at_start(api: Api, caplog, s3_bucket: str,
                                                           expected: str | None) -> None:
    warnings = s3_warnings(caplog)
    if expected is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and expected in warnings[0] and s3_bucket in warnings[0]


def test_cors_rules_match_like_s3() -> None:
    put = {"AllowedOrigins": ["*"], "AllowedMethods": ["put"]}
    assert cors_problems([{**put, "AllowedHeaders": ["content-*"]}]) == []
    assert cors_problems([{**put, "AllowedHeaders": ["CONTENT-MD5"]}]) == []
    assert cors_problems([{**put, "AllowedHeaders": ["x-amz-*"]}])
    # One usable rule among others is enough.
    assert cors_problems([{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]},
                          {**put, "AllowedHeaders": ["*"]}]) == []


async def test_a_signed_link_redirects_to_the_object_store(api: Api, config) -> None:
    data = random.randbytes(CS + 3)
    parts = chunks_of(data, CS)
    uid = (await api.init(len(data), CS, filename="report.pdf"))["upload_id"]
    code, doc = await sign(api, uid, [{"index": i, "md5": md5(p)} for i, p in enumerate(parts)])
    for signed in doc["parts"]:
        assert await put(signed["url"], parts[signed["index"]], signed["headers"]) == 200
    assert (await api.complete(uid, md5(data)))[0] == 200
    code, link = await api.json("GET", f"/upload/{uid}/link")
    assert code == 200, link
    resp = await tornado.httpclient.AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{api.port}{link['url']}", raise_error=False)  # no token
    # moto checks no signature: what is checked here is where the link leads.
    assert resp.code == 200 and resp.body == data and resp.effective_url.startswith(
        config.s3.endpoint_url)
    assert "report.pdf" in resp.headers["Content-Disposition"]
