"""In-process locks: one asyncio.Lock per name, freed when nobody uses it."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator

from .base import NO_TOKEN, LockHandle, LockTimeout


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class MemoryLocks:
    """``ttl`` is accepted for interface parity and ignored: a process cannot
    outlive its own in-process lock."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @asynccontextmanager
    async def lock(self, name: str, *, ttl: float,
                   wait: float | None = None) -> AsyncIterator[LockHandle]:
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _Entry()
        entry.users += 1
        try:
            if wait is None:
                await entry.lock.acquire()
            elif wait <= 0:
                if entry.lock.locked():
                    raise LockTimeout(name)
                await entry.lock.acquire()
            else:
                try:
                    await asyncio.wait_for(entry.lock.acquire(), wait)
                except asyncio.TimeoutError:
                    raise LockTimeout(name) from None
            try:
                yield NO_TOKEN
            finally:
                entry.lock.release()
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[name]

    async def ping(self) -> bool:
        return True  # in-process: up as long as we are

    async def close(self) -> None:
        self._entries.clear()
