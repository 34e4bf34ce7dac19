"""Fixtures for the client tests: a real server process, random files, proxies."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Callable, Iterator

import pytest

from client.support import ROOT, ChunkProxy
from uploader.client import UploadClient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m uploader serve`` on a free port with its own data folder; the
    base URL once /healthz answers 200. Always terminated in teardown.
    TEST_UPLOADER_SERVER_URL=http://host:port runs the tests against a server
    that is already running instead (its port must be on 127.0.0.1 for the proxy)."""
    if os.environ.get("TEST_UPLOADER_SERVER_URL"):
        yield os.environ["TEST_UPLOADER_SERVER_URL"].rstrip("/")
        return
    if not (ROOT / "uploader" / "app.py").exists():
        pytest.skip("the server (uploader/app.py) is not in this tree yet")
    data = tmp_path_factory.mktemp("server-data")
    port = _free_port()
    env = {**os.environ, "UPLOADER_STORAGE_DATA_DIR": str(data),
           "UPLOADER_EXPIRY_ENABLED": "false", "PYTHONUNBUFFERED": "1"}
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uploader", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        # Readiness poll, bounded: the process has no other way to say it listens.
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}: "
                                   f"{(data / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not healthy within 30 s")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def server_port(server: str) -> int:
    return int(server.rsplit(":", 1)[1])


@pytest.fixture
def make_proxy(server_port: int) -> Iterator[Callable[..., ChunkProxy]]:
    proxies: list[ChunkProxy] = []

    def make(**kw: int) -> ChunkProxy:
        proxies.append(ChunkProxy(server_port, **kw))
        return proxies[-1]
    yield make
    for p in proxies:
        p.close()


@pytest.fixture
def make_client() -> Iterator[Callable[..., UploadClient]]:
    """UploadClient factory; each one is closed (threads, sockets) at teardown."""
    clients: list[UploadClient] = []

    def make(*args: object, **kw: object) -> UploadClient:
        clients.append(UploadClient(*args, **kw))  # type: ignore[arg-type]
        return clients[-1]
    yield make
    for client in clients:
        client.close()
