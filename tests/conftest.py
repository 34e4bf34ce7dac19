"""Shared fixtures: a configured app on a real HTTP server, and a JSON client."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest
import tornado.httpclient
import tornado.testing

from uploader.app import make_app, make_server
from uploader.config import Config, load_config
from s3server import s3_bucket, s3_server  # noqa: F401  (fixtures)

KiB, MiB = 1 << 10, 1 << 20


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def require_service(name: str, reason: str) -> None:
    """Skip when a service is missing; in CI (CI=true) that is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required in CI: {reason}")
    pytest.skip(f"{name} unavailable: {reason}")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def config_overrides() -> dict[str, dict[str, Any]]:
    """Tests override this fixture (or update it) to change settings."""
    return {}


@pytest.fixture
def config(data_dir: Path, config_overrides: dict[str, dict[str, Any]]) -> Config:
    layers: dict[str, dict[str, Any]] = {
        "storage": {"data_dir": str(data_dir), "fsync": False},
        "limits": {"chunk_size_min": KiB},
        "expiry": {"enabled": False},
        "merge": {"wait_seconds": 30},
    }
    for section, values in config_overrides.items():
        layers.setdefault(section, {}).update(values)
    return load_config(None, env={}, overrides=layers)


@pytest.fixture
def app(io_loop, config: Config):  # type: ignore[no-untyped-def]
    application = make_app(config)
    runtime = application.runtime
    io_loop.run_sync(runtime.start)
    yield application
    io_loop.run_sync(runtime.stop)


@pytest.fixture
def runtime(app):  # type: ignore[no-untyped-def]
    return app.runtime


@pytest.fixture
def http_server(request, io_loop, app, config, http_server_port):  # type: ignore[no-untyped-def]
    """The app behind the same HTTPServer settings production uses."""
    server = make_server(app, config)
    server.add_socket(http_server_port[0])
    yield server
    server.stop()
    io_loop.run_sync(server.close_all_connections)


class Api:
    """A thin JSON client over the test server: never raises on HTTP errors."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @property
    def port(self) -> int:
        return self.client.get_http_port()

    async def call(self, method: str, path: str, body: Any = None, *,
                   raw: bytes | None = None, headers: dict[str, str] | None = None
                   ) -> tornado.httpclient.HTTPResponse:
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
        if raw is None and method in ("POST", "PUT"):
            raw = b""
        return await self.client.fetch(path, method=method, body=raw, headers=headers,
                                       raise_error=False, request_timeout=120,
                                       allow_nonstandard_methods=True)

    async def json(self, method: str, path: str, body: Any = None, **kw: Any
                   ) -> tuple[int, Any]:
        resp = await self.call(method, path, body, **kw)
        doc = json.loads(resp.body) if resp.body else None
        return resp.code, doc

    async def init(self, size: int, chunk_size: int = 64 * KiB, filename: str = "f.bin",
                   **extra: Any) -> dict[str, Any]:
        code, doc = await self.json("POST", "/upload/init",
                                    {"filename": filename, "size": size,
                                     "chunk_size": chunk_size, **extra})
        assert code == 201, doc
        return doc

    async def put_chunk(self, upload_id: str, index: int, data: bytes,
                        md5_hex: str | None = None) -> tuple[int, Any]:
        query = f"index={index}" + (f"&md5={md5_hex}" if md5_hex else "")
        return await self.json("PUT", f"/upload/{upload_id}/chunk?{query}", raw=data)

    async def status(self, upload_id: str) -> dict[str, Any]:
        code, doc = await self.json("GET", f"/upload/{upload_id}/status")
        assert code == 200, doc
        return doc

    async def complete(self, upload_id: str, md5_hex: str | None = None) -> tuple[int, Any]:
        body = {"md5": md5_hex} if md5_hex else None
        return await self.json("POST", f"/upload/{upload_id}/complete", body)


def chunks_of(data: bytes, chunk_size: int) -> list[bytes]:
    return [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)]


@pytest.fixture
def api(http_server_client) -> Api:  # type: ignore[no-untyped-def]
    return Api(http_server_client)


@pytest.fixture
def random_bytes() -> Callable[[int], bytes]:
    return os.urandom
