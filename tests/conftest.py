"""Fixtures every suite may use: a configured app on a real HTTP server in
this process (``api``), real server processes (``start_server``), and the
machine's MariaDB and an S3 server. Helpers to import live in tests/support/."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest

from support import KiB, Api, MySQLServer, ServerProcess
from support.s3 import MotoS3, moto_server
from support.server import stop_all
from uploader.app import make_app, make_server
from uploader.config import Config, load_config


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


@pytest.fixture
def api(http_server_client) -> Api:  # type: ignore[no-untyped-def]
    return Api(http_server_client)


@pytest.fixture
def random_bytes() -> Callable[[int], bytes]:
    return os.urandom


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Starts ``uploader serve`` processes (``start_server(settings, name=...)``,
    each in ``tmp_path/<name>``) and stops every one at teardown, whatever
    the test did to it (failed, killed, paused)."""
    started: list[ServerProcess] = []

    def start(settings: Mapping[str, object] | None = None, *, name: str = "server",
              wait: bool = True) -> ServerProcess:
        server = ServerProcess(tmp_path / name, settings, name=name)
        started.append(server)
        return server.start(wait=wait)

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="session", autouse=True)
def _no_server_outlives_the_session() -> Iterator[None]:
    """The last safety net: fixtures stop their servers, this stops any left."""
    yield
    stop_all()


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[MySQLServer]:
    """The machine's MariaDB, for throwaway databases (dropped at the end)."""
    server = MySQLServer()
    server.require()
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3]:
    with moto_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: MotoS3) -> str:
    return s3_server.new_bucket()
