"""GET /healthz and /readyz (SQLite app): each dependency reported, a
failing one named with 503. The faults are real: a removed data_dir, a
Redis URL whose port nobody listens on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from support import Api, free_port
from uploader import __version__
from uploader.errors import Unavailable

from .helpers import parse_metrics, value

READY = {"ready": True, "checks": {"database": "ok", "locks": "ok", "storage": "ok"},
         "backends": {"database": "sqlite", "locks": "memory", "storage": "local"}}


async def test_healthz_and_readyz_without_a_token(api: Api) -> None:
    # The one version (uploader.__version__) is what /healthz shows.
    assert await api.json("GET", "/healthz") == (200, {"status": "ok", "version": __version__})
    assert await api.json("GET", "/readyz") == (200, READY)


async def test_readyz_names_storage_when_data_dir_is_gone(api: Api, runtime,  # type: ignore[no-untyped-def]
                                                          data_dir: Path) -> None:
    shutil.rmtree(data_dir)  # the SQLite file goes too, but its open handle still answers
    resp = await api.call("GET", "/readyz")
    assert resp.code == 503
    assert resp.headers["Retry-After"] == "2"
    doc = json.loads(resp.body)
    assert doc["ready"] is False
    assert doc["checks"] == {"database": "ok", "locks": "ok", "storage": "unavailable"}
    assert doc["error"]["code"] == "unavailable" and doc["error"]["failed"] == ["storage"]
    samples = parse_metrics((await api.call("GET", "/metrics")).body.decode())
    assert value(samples, "uploader_ready_check", check="storage") == 0
    assert value(samples, "uploader_ready_check", check="database") == 1

    await runtime.storage.start()  # what a restart would do: folders back
    assert await api.json("GET", "/readyz") == (200, READY)


async def test_storage_ping_creates_nothing(runtime, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    before = sorted(p.name for p in data_dir.rglob("*"))
    await runtime.storage.ping()
    assert sorted(p.name for p in data_dir.rglob("*")) == before
    shutil.rmtree(data_dir / "tmp")
    with pytest.raises(Unavailable):
        await runtime.storage.ping()


@pytest.mark.redis
@pytest.mark.parametrize("config_overrides", [
    {"locks": {"backend": "redis", "redis_url": f"redis://127.0.0.1:{free_port()}/0"}}])
async def test_readyz_names_locks_when_redis_is_unreachable(api: Api) -> None:
    code, doc = await api.json("GET", "/readyz")
    assert code == 503
    assert doc["checks"] == {"database": "ok", "locks": "unavailable", "storage": "ok"}
    assert doc["backends"]["locks"] == "redis"
    assert doc["error"]["failed"] == ["locks"]


@pytest.mark.redis
@pytest.mark.parametrize("config_overrides", [
    {"locks": {"backend": "redis", "redis_url": "redis://127.0.0.1:6379/15"}}])
async def test_readyz_with_redis_up(api: Api) -> None:
    code, doc = await api.json("GET", "/readyz")
    if code != 200 and doc["checks"]["locks"] != "ok":
        from support import require_service
        require_service("Redis", "no server at 127.0.0.1:6379")
    assert (code, doc) == (200, {**READY, "backends": {**READY["backends"], "locks": "redis"}})


DOWN = f"127.0.0.1:{free_port()}"  # nobody listens there


@pytest.mark.parametrize("config_overrides, backend, reachable", [
    ({"locks": {"backend": "mysql", "mysql_dsn": "mysql://root@127.0.0.1:3306/test"}},
     "mysql", True),
    ({"locks": {"backend": "mysql", "mysql_dsn": f"mysql://root@{DOWN}/test"}}, "mysql", False),
    ({"locks": {"backend": "etcd", "etcd_endpoints": ["http://127.0.0.1:2379"]}}, "etcd", True),
    ({"locks": {"backend": "etcd", "etcd_endpoints": [f"http://{DOWN}"]}}, "etcd", False),
], ids=["mysql-up", "mysql-down", "etcd-up", "etcd-down"])
async def test_readyz_names_the_lock_backend(api: Api, backend: str, reachable: bool) -> None:
    code, doc = await api.json("GET", "/readyz")
    assert doc["backends"] == {"database": "sqlite", "locks": backend, "storage": "local"}
    if reachable:
        if code != 200 and doc["checks"]["locks"] != "ok":
            from conftest import require_service
            require_service(backend, "no server at its default address")
        assert (code, doc["checks"]) == (200, READY["checks"])
    else:
        assert code == 503
        assert doc["checks"] == {"database": "ok", "locks": "unavailable", "storage": "ok"}
        assert doc["error"]["failed"] == ["locks"]
