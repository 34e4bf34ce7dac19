"""MySQL only: lock names, one pooled session per held lock, the pool's
limit, and a killed session (the shared behaviour is in test_conformance.py)."""

from __future__ import annotations

import logging

import pytest

from support import MYSQL_DSN
from uploader.errors import Unavailable
from uploader.locks.mysql import MAX_NAME, MySQLLocks, mysql_lock_name

from .helpers import MySQLHarness, logged

pytestmark = pytest.mark.mysql


def test_lock_names_fit_and_stay_distinct() -> None:
    short = mysql_lock_name("uploader", "merge:" + "a" * 32)
    assert short == "uploader:merge:" + "a" * 32  # readable when it fits
    long_db = "d" * 64
    names = {mysql_lock_name(long_db, f"merge:{i:032x}") for i in range(1000)}
    assert len(names) == 1000
    assert all(len(n.encode()) <= MAX_NAME for n in names)
    assert mysql_lock_name(long_db, "expiry") == mysql_lock_name(long_db, "expiry")
    # Cut on a character boundary when the database name is not ASCII.
    assert len(mysql_lock_name("één" * 30, "x").encode()) <= MAX_NAME


async def test_held_lock_is_a_named_lock_of_its_own_session(io_loop, mysql_harness: MySQLHarness,
                                                           lock_name):
    locks = mysql_harness.make()
    sessions = []
    for _ in range(3):
        async with locks.lock(lock_name, ttl=30):
            session = mysql_harness.holder_session(lock_name)
            assert session is not None
            sessions.append(session)
        assert mysql_harness.holder_session(lock_name) is None  # RELEASE_LOCK ran
    # Released connections go back to the pool and are used again.
    assert len(set(sessions)) == 1
    # Two names held at once: two sessions (a session never holds two).
    async with locks.lock(lock_name, ttl=30), locks.lock(lock_name + "-2", ttl=30):
        assert mysql_harness.holder_session(lock_name) != \
            mysql_harness.holder_session(lock_name + "-2")


async def test_busy_pool_is_unavailable(io_loop, lock_name, caplog):
    locks = MySQLLocks(MYSQL_DSN, ttl=30, pool_size=1, connect_timeout=0.5)
    try:
        async with locks.lock(lock_name, ttl=30):
            with caplog.at_level(logging.WARNING, logger="uploader.locks.mysql"):
                with pytest.raises(Unavailable):
                    async with locks.lock(lock_name + "-2", ttl=30, wait=0):
                        pytest.fail("a second lock on a one-connection pool")
            assert "raise locks.mysql_pool_size" in caplog.text
        # Once the first is released, the slot serves the next.
        async with locks.lock(lock_name + "-2", ttl=30, wait=0):
            pass
    finally:
        await locks.close()


async def test_killed_session_is_reported_lost(io_loop, mysql_harness: MySQLHarness, lock_name,
                                               caplog):
    locks = mysql_harness.make()
    with caplog.at_level(logging.WARNING, logger="uploader.locks.mysql"):
        async with locks.lock(lock_name, ttl=1.5):
            await mysql_harness.take_away(lock_name)
            await logged(caplog, "was lost while held")  # the keep-alive's next ping
            assert mysql_harness.holder_session(lock_name) is None
    # Nothing raised; the instance serves the next lock on a fresh session.
    async with locks.lock(lock_name, ttl=30, wait=0):
        assert mysql_harness.holder_session(lock_name) is not None
