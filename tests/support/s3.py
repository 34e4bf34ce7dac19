"""A real S3-compatible server for the tests: moto's standalone server
process (``moto[server]``), one per test session (the ``s3_server`` fixture of
tests/conftest.py), a fresh bucket per test."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import botocore.session

from .server import STOP_TIMEOUT, server_env, spawn
from .services import require_service

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


@contextlib.contextmanager
def moto_server(env: dict[str, str] | None = None) -> Iterator[MotoS3]:
    """moto_server on a port the OS picks; stopped on exit, and killed with
    the test process like every server a test starts. ``env`` adds
    variables (``MOTO_DISABLE_GLOBAL_CORS=true``: only the bucket's own CORS
    rules answer browsers, as on S3)."""
    exe = _moto_executable()
    if exe is None:
        require_service("moto_server", "not installed (pip install 'moto[server]')")
    proc = spawn([exe, "-H", "127.0.0.1", "-p", "0"], env={**server_env(), **(env or {})},
                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                 text=True)
    assert proc.stdout is not None
    drain: threading.Thread | None = None
    try:
        endpoint = None
        for line in proc.stdout:  # blocks until moto says where it listens (or dies)
            m = re.search(r"Running on (http://[\d.]+:\d+)", line)
            if m:
                endpoint = m.group(1)
                break
        if endpoint is None:
            raise AssertionError(f"moto_server did not start (exit {proc.poll()})")
        # moto logs every request: keep reading so the pipe never fills up.
        drain = threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True)
        drain.start()
        yield MotoS3(endpoint)
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if drain is not None:
            drain.join(10)  # EOF once the process is gone
        proc.stdout.close()
