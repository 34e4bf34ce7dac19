"""The lock interface: one merge (or sweep) at a time per name.

``memory`` serves one process; ``redis`` any number of instances. Locks are
not enough alone (a paused process can outlive its lock): merges also fence
their result with ``merge_version`` in the metadata store.
"""

from __future__ import annotations

from typing import AsyncContextManager, Protocol


class LockTimeout(Exception):
    """The lock was not acquired within ``wait`` seconds."""


class Locks(Protocol):
    def lock(self, name: str, *, ttl: float, wait: float | None = None) -> AsyncContextManager[None]:
        """Hold ``name`` for the body of an ``async with``.

        ``ttl`` bounds how long a crashed holder can block others (a watchdog
        keeps extending it while the holder runs); ``wait`` bounds how long to
        wait for it (None: forever, 0: try once). Raises :class:`LockTimeout`
        when not acquired in time and ``Unavailable`` when the backend is down.
        """

    async def ping(self) -> bool:
        """True when the lock service answers (readiness checks); never
        raises for an outage, it answers False."""

    async def close(self) -> None:
        ...
