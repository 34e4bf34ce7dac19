"""Every error of the table that the core can produce, always as JSON."""

from __future__ import annotations

import json

import pytest

from support import KiB, Api, md5
from uploader.errors import ERRORS, ErrorKind, UploadError
from uploader.models import Upload, utcnow

CS = 64 * KiB


def assert_error(code: int, doc: dict, expected: str, retryable: bool | None = None) -> None:
    assert doc["error"]["code"] == expected, doc
    assert code == ERRORS[expected].status
    if retryable is None:
        retryable = ERRORS[expected].retryable
    assert doc["error"]["retryable"] is retryable, doc
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]


@pytest.mark.parametrize("body, expected", [
    (b"{not json", "invalid_request"),
    (b"", "invalid_request"),
    (b"[1, 2]", "invalid_request"),
    (b'{"size": 10, "chunk_size": 65536}', "invalid_request"),
    (b'{"filename": "", "size": 10, "chunk_size": 65536}', "invalid_request"),
    (b'{"filename": "a", "size": -1, "chunk_size": 65536}', "invalid_request"),
    (b'{"filename": "a", "size": true, "chunk_size": 65536}', "invalid_request"),
    (b'{"filename": "a", "size": "10", "chunk_size": 65536}', "invalid_request"),
    (b'{"filename": "a", "size": 10, "chunk_size": 1.5}', "invalid_request"),
    (b'{"filename": "a", "size": 10, "chunk_size": 512}', "invalid_request"),
    (b'{"filename": "a", "size": 10, "chunk_size": 134217728}', "invalid_request"),
    (b'{"filename": "a", "size": 10, "chunk_size": 65536, "md5": "xyz"}', "invalid_request"),
    # 10,001 chunks of 1 KiB: over max_chunks.
    (b'{"filename": "a", "size": 10241024, "chunk_size": 1024}', "invalid_request"),
    # Over the size limit is reported first, even with another problem.
    (b'{"filename": "a", "size": 60000000000, "chunk_size": 1}', "too_large"),
])
async def test_init_validation(api: Api, body: bytes, expected: str) -> None:
    code, doc = await api.json("POST", "/upload/init", raw=body)
    assert_error(code, doc, expected)


async def test_init_json_body_limit(api: Api) -> None:
    code, doc = await api.json("POST", "/upload/init", raw=b'{"filename": "' + b"a" * 70000 + b'"}')
    assert code in (400, 413)
    if doc is not None:
        assert doc["error"]["code"] in ("invalid_request", "too_large")


async def test_chunk_parameter_errors(api: Api) -> None:
    up = await api.init(2 * CS, CS)
    uid = up["upload_id"]
    body = bytes(CS)
    cases = [
        (f"/upload/{uid}/chunk", "invalid_request"),
        (f"/upload/{uid}/chunk?index=abc", "invalid_request"),
        (f"/upload/{uid}/chunk?index=-1", "invalid_request"),
        (f"/upload/{uid}/chunk?index=2", "invalid_request"),
        (f"/upload/{uid}/chunk?index=0&md5=nothex", "invalid_request"),
        (f"/upload/{'0' * 32}/chunk?index=0", "not_found"),
    ]
    for path, expected in cases:
        code, doc = await api.json("PUT", path, raw=body)
        assert_error(code, doc, expected)
    code, doc = await api.json("PUT", f"/upload/{uid}/chunk?index=0", raw=body[:100])
    assert_error(code, doc, "size_mismatch")
    assert doc["error"]["expected"] == CS
    code, doc = await api.json("PUT", f"/upload/{uid}/chunk?index=0", raw=body + b"x")
    assert_error(code, doc, "too_large")
    code, doc = await api.json("PUT", f"/upload/{uid}/chunk?index=0", raw=body,
                               headers={"Content-MD5": "not base64!"})
    assert_error(code, doc, "invalid_request")
    assert (await api.status(uid))["received"] == []


async def test_chunked_transfer_body_too_long_is_refused(api: Api) -> None:
    """Without Content-Length the size is checked as the body streams."""
    up = await api.init(CS, CS)
    uid = up["upload_id"]

    async def producer(write):  # type: ignore[no-untyped-def]
        for _ in range(3):
            await write(bytes(CS // 2))

    resp = await api.client.fetch(f"/upload/{uid}/chunk?index=0", method="PUT",
                                  body_producer=producer, raise_error=False,
                                  request_timeout=30)
    assert resp.code in (400, 413, 599)
    assert (await api.status(uid))["received"] == []


async def test_conflict_and_incomplete(api: Api) -> None:
    up = await api.init(2 * CS, CS)
    uid = up["upload_id"]
    await api.put_chunk(uid, 0, bytes(CS))
    code, doc = await api.complete(uid)
    assert_error(code, doc, "incomplete")
    assert doc["error"]["missing"] == [1]
    await api.put_chunk(uid, 1, bytes(CS))
    code, _ = await api.complete(uid)
    assert code == 200
    code, doc = await api.put_chunk(uid, 0, bytes(CS))
    # Waiting never reopens a completed upload: not worth retrying.
    assert_error(code, doc, "conflict", retryable=False)
    code, doc = await api.json("POST", f"/upload/{uid}/complete", raw=b"{bad")
    assert_error(code, doc, "invalid_request")
    code, doc = await api.complete(uid, md5(b"other"))
    assert_error(code, doc, "checksum_mismatch")


@pytest.mark.parametrize("method, path", [
    ("GET", "/upload/init"),
    ("DELETE", "/upload/init"),
    ("POST", "/uploads"),
    ("PUT", "/upload/" + "a" * 32 + "/status"),
    ("GET", "/upload/" + "a" * 32 + "/complete"),
    ("POST", "/files/" + "a" * 32),
])
async def test_method_not_allowed(api: Api, method: str, path: str) -> None:
    code, doc = await api.json(method, path, raw=b"" if method in ("POST", "PUT") else None)
    assert_error(code, doc, "method_not_allowed")


async def test_chunk_route_refuses_get(api: Api) -> None:
    up = await api.init(CS, CS)
    code, doc = await api.json("GET", f"/upload/{up['upload_id']}/chunk?index=0")
    assert_error(code, doc, "method_not_allowed")


async def test_unknown_paths_are_json_404(api: Api) -> None:
    # (/files/ itself is the tus endpoint: POST and OPTIONS only.)
    for path in ("/nope", "/upload", "/upload/" + "a" * 32 + "/other", "/files/x"):
        code, doc = await api.json("GET", path)
        assert_error(code, doc, "not_found")


async def test_unexpected_failure_is_internal_without_details(api: Api, runtime) -> None:
    async def broken(*args, **kwargs):  # a fault we cannot make otherwise: a bug
        raise RuntimeError("secret detail")

    runtime.store.list_uploads = broken
    resp = await api.call("GET", "/uploads")
    assert resp.code == 500
    assert b"secret" not in resp.body and b"internal" in resp.body
    assert json.loads(resp.body)["error"]["retryable"] is True


def test_every_code_says_whether_a_retry_can_help() -> None:
    assert all(isinstance(kind, ErrorKind) and isinstance(kind.retryable, bool)
               for kind in ERRORS.values())
    # The answers a well-formed request can get while the server or its
    # dependencies are busy or away: a client waits and repeats them.
    retryable = {code for code, kind in ERRORS.items() if kind.retryable}
    assert retryable == {"conflict", "rate_limited", "insufficient_storage", "unavailable",
                         "internal", "locked"}  # locked: tus, another PATCH is writing


@pytest.mark.parametrize("status, retryable", [
    ("merging", True), ("in_progress", True),
    ("completed", False), ("failed", False), ("aborted", False),
])
def test_a_conflict_is_retryable_only_while_the_upload_can_still_change(
        status: str, retryable: bool) -> None:
    error = UploadError("conflict", f"upload is {status}", status=status).to_json()["error"]
    assert error["retryable"] is retryable
    assert UploadError("conflict", "gone", retryable=False).retryable is False


def test_a_stored_merge_error_carries_the_flag_on_the_wire() -> None:
    """Errors recorded before the flag existed (or built as plain dicts)
    still answer with it in the upload object."""
    up = Upload(upload_id="a" * 32, owner="o", filename="f", size=1, chunk_size=1,
                total_chunks=1, md5=None, status="in_progress",
                created_at=utcnow(), updated_at=utcnow(),
                error={"code": "internal", "message": "merge failed"})
    assert up.to_json()["error"] == {"code": "internal", "message": "merge failed",
                                     "retryable": True}
    up = up.replace(error={"code": "checksum_mismatch", "message": "x", "retryable": False})
    assert up.to_json()["error"]["retryable"] is False
