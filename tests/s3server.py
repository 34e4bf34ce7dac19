"""A real S3-compatible server for the tests: moto's standalone server
process (``moto[server]``), one per test session, a fresh bucket per test.

Fixtures here are loaded by tests/conftest.py. Without moto the S3 tests
skip locally and fail in CI (CI=true).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import botocore.session
import pytest

ACCESS = {"access_key_id": "testing", "secret_access_key": "testing"}


class MotoS3:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        # Sync botocore for setup and for checking what S3 holds: the test
        # looks at the server from outside, not through the code under test.
        self.client: Any = botocore.session.get_session().create_client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing")

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:20]}"
        self.client.create_bucket(Bucket=name)
        return name

    def config(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """The ``s3`` config section for this server and bucket."""
        return {"endpoint_url": self.endpoint, "bucket": bucket, "region": "us-east-1",
                "addressing_style": "path", **ACCESS, **extra}

    def open_uploads(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        return self.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])

    def keys(self, bucket: str) -> list[str]:
        return [o["Key"] for o in self.client.list_objects_v2(Bucket=bucket).get("Contents", [])]

    def get(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()


def _moto_executable() -> str | None:
    beside = Path(sys.executable).parent / "moto_server"
    return str(beside) if beside.exists() else shutil.which("moto_server")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3]:
    exe = _moto_executable()
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("moto_server is required in CI: pip install 'moto[server]'")
        pytest.skip("moto_server not installed (pip install 'moto[server]')")
    # Port 0: the OS picks a free one and werkzeug prints it.
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    endpoint = None
    for line in proc.stdout:  # blocks until moto says where it listens (or dies)
        m = re.search(r"Running on (http://[\d.]+:\d+)", line)
        if m:
            endpoint = m.group(1)
            break
    if endpoint is None:
        proc.kill()
        proc.wait()
        pytest.fail(f"moto_server did not start (exit {proc.poll()})")
    # moto logs every request: keep reading so the pipe never fills up.
    drain = threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True)
    drain.start()
    try:
        yield MotoS3(endpoint)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        drain.join(10)  # EOF once the process is gone
        proc.stdout.close()


@pytest.fixture
def s3_bucket(s3_server: MotoS3) -> str:
    return s3_server.new_bucket()
