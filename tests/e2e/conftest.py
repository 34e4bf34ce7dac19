"""Fixtures for the multi-instance tests: clusters of real server processes
sharing MariaDB, a lock service and one data_dir, as several instances
behind a load balancer would (tests/e2e/helpers.py).

Each cluster gets a fresh database, a lock key prefix of its own (only those
keys are deleted afterwards) and one shared data_dir under the test's tmp
path. Every process started is stopped at teardown, whatever happened to it
(failed test, SIGKILL, SIGSTOP). ``cluster`` locks through Redis;
``shared_cluster`` runs its test once per shared lock backend (redis, mysql,
etcd); ``make_cluster(backend)`` is for a test that picks one itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis

from support import MySQLServer, require_etcd, require_redis

from .helpers import ETCD_URL, LOCK_BACKENDS, REDIS_URL, Cluster


@pytest.fixture
def make_cluster(tmp_path: Path, mysql_server: MySQLServer
                 ) -> Iterator[Callable[[str], Cluster]]:
    made: list[Cluster] = []

    def make(lock_backend: str = "redis") -> Cluster:
        if lock_backend == "redis":
            require_redis(REDIS_URL)
        elif lock_backend == "etcd":
            require_etcd(ETCD_URL)
        tmp = tmp_path if not made else tmp_path / f"cluster{len(made) + 1}"
        tmp.mkdir(exist_ok=True)
        made.append(Cluster(tmp, mysql_server.create_database(), lock_backend))
        return made[-1]

    yield make
    for group in made:
        try:
            group.stop_all()
        finally:
            group.cleanup()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """The e2e Redis, to look at streams and queues behind the servers' backs."""
    client = redis.Redis.from_url(require_redis(REDIS_URL), socket_connect_timeout=3,
                                  socket_timeout=3)
    yield client
    client.close()


@pytest.fixture
def cluster(make_cluster: Callable[[str], Cluster]) -> Cluster:
    return make_cluster("redis")


@pytest.fixture(params=LOCK_BACKENDS)
def shared_cluster(request: pytest.FixtureRequest,
                   make_cluster: Callable[[str], Cluster]) -> Cluster:
    return make_cluster(request.param)
