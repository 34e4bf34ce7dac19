"""Every Redis key the server writes, under one configured prefix.

``locks.redis_prefix`` is a deployment's namespace in Redis. Each family of
keys adds its own part, so deployments (or test runs) sharing one Redis
share nothing: no locks, no rate-limit budgets, no streams.

    <prefix>lock:<name>     locks (locks/redis.py)
    <prefix>rl:<bucket>     rate-limit token buckets (ratelimit.py)
    <prefix>merges          the merge queue's stream (merge_queue.py)
    <prefix>merges:progress:<id>  bytes merged by a queued merge

The events stream is the one key named by a setting of its own
(``events.stream``, on ``events.redis_url``): consumers outside the server
read it by that name.

A new family (a stream, say) adds its part here and builds its keys with
:func:`key_prefix`, never with a literal.
"""

from __future__ import annotations

from .config import LocksConfig

LOCKS = "lock:"
RATE_LIMITS = "rl:"
MERGES = "merges"


def namespace(config: LocksConfig) -> str:
    """The configured prefix. Before issue 13 the setting prefixed lock keys
    only, with the default "uploader:lock:": a value of that form is read as
    the namespace before "lock:", so a configuration written then keeps the
    very same lock keys (no two versions hold different keys for one lock
    during a rolling upgrade)."""
    return config.redis_prefix.removesuffix(LOCKS)


def key_prefix(config: LocksConfig, family: str) -> str:
    return namespace(config) + family
