"""Bounded polling: the one way a test waits for something to become true."""

from __future__ import annotations

import asyncio
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, timeout: float = 30.0,
               interval: float = 0.02) -> T:
    """Call ``condition`` until it returns something truthy and return that.

    The timeout only turns a broken test into a failure naming ``what``
    instead of a hang; the wait ends as soon as the condition holds, so no
    test depends on how fast the machine is. Exceptions from ``condition``
    propagate (a server that died is a failure, not a reason to keep polling).
    """
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        _check(deadline, timeout, what)
        time.sleep(interval)
    return value


async def wait_until_async(condition: Callable[[], T], what: str, timeout: float = 30.0,
                           interval: float = 0.01) -> T:
    """:func:`wait_until` on the test's event loop: the app under test runs
    on the same loop, so the wait yields to it instead of blocking it."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        _check(deadline, timeout, what)
        await asyncio.sleep(interval)
    return value


def _check(deadline: float, timeout: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
