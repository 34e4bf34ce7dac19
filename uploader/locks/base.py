"""The lock interface: one merge (or sweep) at a time per name.

``memory`` serves one process; ``redis``, ``mysql`` and ``etcd`` any number
of instances. Locks are not enough alone (a paused process can outlive its
lock): merges also fence their result with ``merge_version`` in the metadata
store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import AsyncContextManager, Protocol


class LockTimeout(Exception):
    """The lock was not acquired within ``wait`` seconds."""


@dataclass(frozen=True)
class LockHandle:
    """What ``async with locks.lock(...) as held`` gives the holder.

    ``token`` is a fencing token where the backend has a natural one: a
    number that grows with every acquisition of the same name, so a resource
    that remembers the highest token it saw can refuse a stale holder. etcd
    gives the revision at which the lock was granted; memory, redis and mysql
    give None (their holders are fenced by ``merge_version`` alone).
    """

    token: int | None = None


NO_TOKEN = LockHandle()


def deadline_of(wait: float | None) -> float | None:
    """The monotonic time a ``wait`` ends at (None: waits forever)."""
    return None if wait is None else time.monotonic() + max(wait, 0.0)


def remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (never negative; None: no end)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class Locks(Protocol):
    def lock(self, name: str, *, ttl: float,
             wait: float | None = None) -> AsyncContextManager[LockHandle]:
        """Hold ``name`` for the body of an ``async with``.

        ``ttl`` bounds how long a crashed or frozen holder can block others
        (a keep-alive renews it while the holder runs); ``wait`` bounds how
        long to wait for it (None: forever, 0: try once). Raises
        :class:`LockTimeout` when not acquired in time and ``Unavailable``
        when the backend cannot be reached. Only acquisition raises: losing
        the lock while held, or failing to release it, is logged (the lock
        then frees by its ttl) and the body's own errors pass unchanged.
        """

    async def ping(self) -> bool:
        """True when the lock service answers (readiness checks); never
        raises for an outage, it answers False."""

    async def close(self) -> None:
        ...
