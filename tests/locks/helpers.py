"""The lock suites' harnesses: one per backend (the fixtures are in conftest.py).

A harness builds instances of its backend (each instance stands for one
server process: ``locks`` and ``peer`` are two of them on one service) and
makes the faults the conformance suite needs, on the real services: a
holder in another process (crashed, frozen), a holder whose lock is taken
away (the key deleted, the session killed, the lease revoked), the service
cut away behind a TCP relay. Services: Redis (db 15), MariaDB (database
``test``), etcd (127.0.0.1:2379, keys under a prefix of this run's own).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pymysql
import redis

from support import MYSQL_DSN, MySQLServer, require_etcd, require_redis
from uploader.locks.base import Locks
from uploader.locks.etcd import EtcdLocks, etcd_lock_key
from uploader.locks.etcd_gateway import b64, prefix_end
from uploader.locks.memory import MemoryLocks
from uploader.locks.mysql import MySQLLocks, mysql_lock_name
from uploader.locks.redis import RedisLocks
from uploader.store.dsn import parse_dsn

REDIS_URL = os.environ.get("TEST_UPLOADER_REDIS_URL", "redis://127.0.0.1:6379/15")
ETCD_URL = os.environ.get("TEST_UPLOADER_ETCD_URL", "http://127.0.0.1:2379")
HOLDER = Path(__file__).with_name("holder.py")


def with_address(url: str, host: str, port: int) -> str:
    """The same URL (credentials, path) at another host:port (a relay)."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@{host}:{port}" if auth else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class Harness:
    """Builds instances of one backend and makes faults in it."""

    kind = ""
    url = ""
    prefix = ""

    def __init__(self) -> None:
        self.made: list[Locks] = []

    def build(self, url: str) -> Locks:
        raise NotImplementedError

    def make(self, url: str | None = None) -> Locks:
        """A new instance (as if in another server process)."""
        locks = self.build(url or self.url)
        self.made.append(locks)
        return locks

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 0

    def make_at(self, host: str, port: int) -> Locks:
        """An instance that reaches the service through host:port."""
        return self.make(with_address(self.url, host, port))

    def holder_argv(self, name: str, ttl: float) -> list[str]:
        return [sys.executable, str(HOLDER), self.kind, self.url, self.prefix, name, str(ttl)]

    async def take_away(self, name: str) -> None:
        """Make the current holder of ``name`` lose it, as expiry would."""
        raise NotImplementedError

    async def close(self) -> None:
        for locks in self.made:
            await locks.close()


class MemoryHarness(Harness):
    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.instance = MemoryLocks()
        self.made.append(self.instance)

    def make(self, url: str | None = None) -> Locks:
        return self.instance  # one process: every "instance" is the same


class RedisHarness(Harness):
    kind = "redis"

    def __init__(self) -> None:
        super().__init__()
        self.url = REDIS_URL
        self.prefix = f"uploader-test:{uuid.uuid4().hex}:"
        self.client = redis.asyncio.Redis.from_url(REDIS_URL)

    def build(self, url: str) -> Locks:
        return RedisLocks(url, key_prefix=self.prefix, socket_timeout=2)

    async def take_away(self, name: str) -> None:
        assert await self.client.delete(self.prefix + name) == 1

    async def close(self) -> None:
        await super().close()
        async for key in self.client.scan_iter(match=self.prefix + "*"):
            await self.client.delete(key)
        await self.client.aclose()


class MySQLHarness(Harness):
    kind = "mysql"

    def __init__(self) -> None:
        super().__init__()
        self.url = MYSQL_DSN
        self.params = parse_dsn(MYSQL_DSN)

    def build(self, url: str) -> Locks:
        return MySQLLocks(url, ttl=30, pool_size=4, connect_timeout=2)

    def admin(self) -> pymysql.connections.Connection:
        p = self.params
        return pymysql.connect(host=p["host"], port=p["port"], user=p["user"],
                               password=p["password"], database=p["db"], autocommit=True,
                               connect_timeout=3)

    def holder_session(self, name: str) -> int | None:
        """The connection id holding ``name`` (IS_USED_LOCK), or None."""
        key = mysql_lock_name(self.params["db"], name)
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute("SELECT IS_USED_LOCK(%s)", (key,))
            return cur.fetchone()[0]

    async def take_away(self, name: str) -> None:
        session = self.holder_session(name)
        assert session is not None
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute(f"KILL CONNECTION {int(session)}")


class EtcdHarness(Harness):
    kind = "etcd"

    def __init__(self) -> None:
        super().__init__()
        self.url = ETCD_URL
        self.prefix = f"uploader-test/{uuid.uuid4().hex}/"

    def build(self, url: str) -> Locks:
        return EtcdLocks(url, key_prefix=self.prefix, request_timeout=2)

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def keys(self, under: str = "") -> list[dict[str, Any]]:
        """The key-values under this run's prefix (+ ``under``)."""
        start = self.prefix + under
        doc = self.call("/v3/kv/range", {"key": b64(start), "range_end": b64(prefix_end(start))})
        return doc.get("kvs", [])

    async def take_away(self, name: str) -> None:
        held = self.keys(etcd_lock_key("", name) + "/")
        assert held
        for kv in held:
            self.call("/v3/lease/revoke", {"ID": kv["lease"]})

    async def close(self) -> None:
        await super().close()
        self.call("/v3/kv/deleterange", {"key": b64(self.prefix),
                                         "range_end": b64(prefix_end(self.prefix))})


async def logged(caplog: Any, text: str, timeout: float = 5.0) -> None:
    """Wait (bounded poll) until a captured log line contains ``text``: the
    keep-alives notice a lost lock on their next tick."""
    deadline = time.monotonic() + timeout
    while text not in caplog.text:
        assert time.monotonic() < deadline, f"{text!r} not logged: {caplog.text}"
        await asyncio.sleep(0.01)


def _redis_up() -> None:
    require_redis(REDIS_URL)


def _mysql_up() -> None:
    MySQLServer(MYSQL_DSN).require()


def _etcd_up() -> None:
    require_etcd(ETCD_URL)


HARNESSES = {"memory": (MemoryHarness, None), "redis": (RedisHarness, _redis_up),
             "mysql": (MySQLHarness, _mysql_up), "etcd": (EtcdHarness, _etcd_up)}


def open_harness(kind: str) -> Harness:
    """The harness of ``kind``, once its service answers (require_service)."""
    cls, check = HARNESSES[kind]
    if check is not None:
        check()
    return cls()
