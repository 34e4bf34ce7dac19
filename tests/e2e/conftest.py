"""Fixtures for the multi-instance tests: a cluster of real server processes
sharing MariaDB, Redis and one data_dir, as several instances behind a load
balancer would (tests/e2e/helpers.py).

Each cluster gets a fresh database, a Redis key prefix of its own (only those
keys are deleted afterwards) and one shared data_dir under the test's tmp
path. Every process started is stopped at teardown, whatever happened to it
(failed test, SIGKILL, SIGSTOP).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis

from support import MySQLServer, require_redis

from .helpers import REDIS_URL, Cluster


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(require_redis(REDIS_URL), socket_connect_timeout=3,
                                  socket_timeout=3)
    yield client
    client.close()


@pytest.fixture
def cluster(tmp_path: Path, mysql_server: MySQLServer,
            redis_client: redis.Redis) -> Iterator[Cluster]:
    prefix = f"uploader-e2e:{uuid.uuid4().hex}:"
    group = Cluster(tmp_path, mysql_server.create_database(), prefix)
    try:
        yield group
    finally:
        group.stop_all()
        for key in redis_client.scan_iter(match=prefix + "*"):
            redis_client.delete(key)
