"""Fixtures for the client tests: a real server process, proxies, clients."""

from __future__ import annotations

import os
from typing import Callable, Iterator

import pytest

from support import ServerProcess
from uploader.client import UploadClient

from .proxy import ChunkProxy


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``uploader serve`` with its own data folder, shared by the module's
    tests; its base URL. TEST_UPLOADER_SERVER_URL=http://host:port runs the
    tests against a server that is already running instead (its port must be
    on 127.0.0.1 for the proxy)."""
    if os.environ.get("TEST_UPLOADER_SERVER_URL"):
        yield os.environ["TEST_UPLOADER_SERVER_URL"].rstrip("/")
        return
    with ServerProcess(tmp_path_factory.mktemp("server")) as process:
        yield process.url


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
