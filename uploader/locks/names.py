"""The locks the server takes, named for what they guard, in one place.

``upload:<id>`` guards everything that changes an upload's bytes or status
against everything else that does: a chunk's commit (rename + record), a
merge, an expiry, recovery's repairs. ``expiry`` lets one instance sweep at a
time. ``tus:<id>`` is held by the one tus PATCH appending to an upload, for its
whole body (chunk commits inside it still take ``upload:<id>``). Every holder passes through :class:`UploadLocks`, so the names and the
TTL cannot drift apart between callers.
"""

from __future__ import annotations

from typing import AsyncContextManager

from .base import LockHandle, Locks

SWEEP_LOCK = "expiry"


def upload_lock(upload_id: str) -> str:
    return f"upload:{upload_id}"


def append_lock(upload_id: str) -> str:
    return f"tus:{upload_id}"


class UploadLocks:
    def __init__(self, locks: Locks, ttl: float) -> None:
        self.locks = locks
        self.ttl = ttl

    def upload(self, upload_id: str, *,
               wait: float | None = None) -> AsyncContextManager[LockHandle]:
        """Hold the upload's lock; ``wait`` as in ``Locks.lock`` (None:
        forever, 0: try once), raising ``LockTimeout`` when not acquired."""
        return self.locks.lock(upload_lock(upload_id), ttl=self.ttl, wait=wait)

    def append(self, upload_id: str) -> AsyncContextManager[LockHandle]:
        """One tus PATCH per upload at a time, on any instance: a second one
        is refused at once (``LockTimeout``), never queued."""
        return self.locks.lock(append_lock(upload_id), ttl=self.ttl, wait=0)

    def sweep(self) -> AsyncContextManager[LockHandle]:
        """One sweeping instance at a time: the others skip, never wait."""
        return self.locks.lock(SWEEP_LOCK, ttl=self.ttl, wait=0)
