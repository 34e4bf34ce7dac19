"""The machine's shared services (MariaDB, Redis, etcd, tools) and the one rule for
when one is missing: skip on a developer's machine, fail in CI."""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pymysql
import pytest
import redis

from uploader.store.mysql import parse_dsn

IN_CI = os.environ.get("CI") == "true"
MYSQL_DSN = os.environ.get("TEST_UPLOADER_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")


def require_service(name: str, reason: str) -> NoReturn:
    """``name`` is not available (``reason`` says why): skip the test locally;
    in CI (CI=true) fail it, because there every service must be present and a
    silent skip would hide a broken setup."""
    if IN_CI:
        pytest.fail(f"{name} is required in CI (CI=true): {reason}", pytrace=False)
    pytest.skip(f"{name} unavailable: {reason}")


def require_redis(url: str) -> str:
    """``url`` if a Redis server answers there, else :func:`require_service`."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        require_service("Redis", f"not reachable at {url}: {exc}")
    finally:
        client.close()
    return url


def require_etcd(url: str) -> str:
    """``url`` if an etcd member answers healthy there, else :func:`require_service`."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=3) as response:
            healthy = json.loads(response.read()).get("health") == "true"
    except (OSError, ValueError) as exc:
        require_service("etcd", f"not reachable at {url}: {exc}")
    if not healthy:
        require_service("etcd", f"not healthy at {url}")
    return url


def with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


class MySQLServer:
    """The machine's MariaDB: creates throwaway databases, drops them at the end."""

    def __init__(self, dsn: str = MYSQL_DSN) -> None:
        self.dsn = dsn
        self.params = parse_dsn(dsn)
        self.created: list[str] = []

    def admin(self) -> pymysql.connections.Connection:
        return pymysql.connect(host=self.params["host"], port=self.params["port"],
                               user=self.params["user"], password=self.params["password"],
                               database=self.params["db"], autocommit=True, connect_timeout=3)

    def require(self) -> None:
        """Skip (locally) or fail (CI) when the server does not answer."""
        try:
            self.admin().close()
        except pymysql.err.Error as exc:
            require_service("MySQL", f"not reachable at {self.dsn}: {exc}")

    def create_database(self) -> str:
        """A fresh, empty database; returns its DSN."""
        name = f"uploader_test_{uuid.uuid4().hex[:16]}"
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        self.created.append(name)
        return with_database(self.dsn, name)

    def drop_all(self) -> None:
        with self.admin() as conn, conn.cursor() as cur:
            for name in self.created:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
