"""tus on the S3 backend (moto's real S3 HTTP API): the tail of an unfinished
chunk lives in the bucket, not on the instance's disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from support import Api
from support.s3 import MotoS3

MiB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
def config_overrides(s3_server: MotoS3, s3_bucket: str) -> dict[str, dict[str, Any]]:
    return {"storage": {"backend": "s3"}, "s3": s3_server.config(s3_bucket, prefix="u/")}


async def test_tail_in_the_bucket(api: Api, s3_server: MotoS3, s3_bucket: str,
                                  data_dir: Path) -> None:
    data = os.urandom(12 * MiB + 5)
    resp = await api.call("POST", "/files/", raw=b"", headers={
        **TUS, "Upload-Length": str(len(data))})
    assert resp.code == 201
    uid = resp.headers["Location"].rsplit("/", 1)[1]
    # Concatenation is offered on S3 too (tests/tus/test_s3_concat.py).
    assert "concatenation" in (await api.call("OPTIONS", "/files/")).headers[
        "Tus-Extension"].split(",")

    async def patch(start: int, end: int) -> Any:
        return await api.call("PATCH", f"/files/{uid}", raw=data[start:end], headers={
            **TUS, "Upload-Offset": str(start),
            "Content-Type": "application/offset+octet-stream"})

    assert (await patch(0, 3 * MiB)).code == 204
    # 8 MiB chunks (the default): all of it is tail, kept as an object.
    assert s3_server.get(s3_bucket, f"u/{uid}.tail") == data[:3 * MiB]
    assert not list((data_dir / "tmp").rglob("tail_*"))
    resp = await patch(3 * MiB, 10 * MiB)  # completes part 1, a new 2 MiB tail
    assert resp.code == 204 and resp.headers["Upload-Offset"] == str(10 * MiB)
    assert (await api.status(uid))["received"] == [0]
    assert s3_server.get(s3_bucket, f"u/{uid}.tail") == data[8 * MiB:10 * MiB]
    assert (await patch(10 * MiB, len(data))).code == 204
    status = await api.status(uid)
    assert status["status"] == "completed"
    assert status["md5"] == hashlib.md5(data).hexdigest()
    assert f"u/{uid}.tail" not in s3_server.keys(s3_bucket)
    assert hashlib.md5(s3_server.get(s3_bucket, f"u/{uid}_file")).hexdigest() == status["md5"]
