"""Fixtures for the lock tests: one harness per backend, on the test's IOLoop
(the harnesses, and what they can break, are in helpers.py)."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from uploader.locks.base import Locks

from .helpers import Harness, open_harness

# Shared by several processes: what a crash, a lost lock or an outage can hit.
SHARED = [pytest.param("redis", marks=pytest.mark.redis),
          pytest.param("mysql", marks=pytest.mark.mysql),
          pytest.param("etcd", marks=pytest.mark.etcd)]
BACKENDS = ["memory", *SHARED]


def _harness(io_loop, kind: str) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    harness = open_harness(kind)
    yield harness
    io_loop.run_sync(harness.close)


@pytest.fixture(params=BACKENDS)
def harness(request, io_loop) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    yield from _harness(io_loop, request.param)


@pytest.fixture(params=SHARED)
def shared_harness(request, io_loop) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    """The backends of several processes only (memory has no other process,
    service or outage to test)."""
    yield from _harness(io_loop, request.param)


@pytest.fixture
def locks(harness: Harness) -> Locks:
    return harness.make()


@pytest.fixture
def peer(harness: Harness) -> Locks:
    """A second instance on the same service (another server process)."""
    return harness.make()


@pytest.fixture
def redis_harness(io_loop) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    yield from _harness(io_loop, "redis")


@pytest.fixture
def mysql_harness(io_loop) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    yield from _harness(io_loop, "mysql")


@pytest.fixture
def etcd_harness(io_loop) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    yield from _harness(io_loop, "etcd")


@pytest.fixture
def lock_name() -> str:
    """Unique per test, so runs never meet each other's keys."""
    return f"test-{uuid.uuid4().hex}"
