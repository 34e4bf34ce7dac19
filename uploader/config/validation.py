"""Checks of a loaded configuration: ranges, choices, the keys that go
together, the security settings, and what a chosen backend needs installed.

Each failure is a ConfigError naming the key (``limits.chunk_size_max must
be >= chunk_size_min``) and carrying the keys it is about, so the loader can
say where the offending value was set.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import ipaddress
import re
from typing import Iterable
from urllib.parse import urlsplit

from .. import DISTRIBUTION
from ..event_model import EVENT_TYPES
from ..store.dsn import parse_dsn
from ..units import KiB, MiB
from .errors import ConfigError
from .schema import LOCK_BACKENDS, LOG_FORMATS, LOG_LEVELS, Config

# Owner names end up in the uploads.owner column (VARCHAR(64)) and in logs:
# a conservative alphabet keeps them printable and unambiguous.
OWNER_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")
SHA256_RE = re.compile(r"\A[0-9a-f]{64}\Z")
ORIGIN_RE = re.compile(r"\A(\*|https?://[^/\s?#]+)\Z")
WEBHOOK_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,47}\Z")
_FILE_TYPE = re.compile(r"\.[\w.+-]+|[\w.+-]+/(\*|[\w.+-]+)")

# (passed?, message, the keys it is about: the first set by the user is blamed)
Check = tuple[bool, str, tuple[str, ...]]


def validate(config: Config) -> Config:
    for ok, message, keys in _all_checks(config):
        if not ok:
            raise ConfigError(message, keys=keys)
    _check_auth(config)
    _check_installed(config)
    return config


def _all_checks(config: Config) -> Iterable[Check]:
    yield from _server_checks(config)
    yield from _backend_checks(config)
    yield from _s3_checks(config)
    yield from _limit_checks(config)
    yield from _events_checks(config)
    yield from _webhook_checks(config)
    yield from _link_checks(config)


def _server_checks(c: Config) -> Iterable[Check]:
    server = c.server
    yield (0 < server.port < 65536, "server.port must be between 1 and 65535", ("server.port",))
    yield (server.read_chunk_size >= 4 * KiB, "server.read_chunk_size must be >= 4KiB",
           ("server.read_chunk_size",))
    yield (server.max_buffered >= server.read_chunk_size,
           "server.max_buffered must be >= read_chunk_size",
           ("server.max_buffered", "server.read_chunk_size"))
    yield (server.shutdown_timeout >= 0, "server.shutdown_timeout must be >= 0",
           ("server.shutdown_timeout",))
    lim = c.limits
    yield (lim.chunk_size_min >= 1, "limits.chunk_size_min must be >= 1",
           ("limits.chunk_size_min",))
    yield (lim.chunk_size_max >= lim.chunk_size_min,
           "limits.chunk_size_max must be >= chunk_size_min",
           ("limits.chunk_size_max", "limits.chunk_size_min"))
    yield (lim.chunk_size_min <= lim.chunk_size_default <= lim.chunk_size_max,
           "limits.chunk_size_default must be between chunk_size_min and chunk_size_max",
           ("limits.chunk_size_default", "limits.chunk_size_min", "limits.chunk_size_max"))
    yield (lim.max_chunks >= 1, "limits.max_chunks must be >= 1", ("limits.max_chunks",))
    yield (lim.max_file_size >= 0, "limits.max_file_size must be >= 0", ("limits.max_file_size",))
    yield (lim.parallel_chunks >= 1, "limits.parallel_chunks must be >= 1",
           ("limits.parallel_chunks",))
    yield (c.page.max_files >= 0, "page.max_files must be >= 0", ("page.max_files",))
    yield (1 <= c.page.hash_workers <= 16, "page.hash_workers must be between 1 and 16",
           ("page.hash_workers",))
    yield (c.page.max_total_size >= 0, "page.max_total_size must be >= 0",
           ("page.max_total_size",))
    yield (all(_FILE_TYPE.fullmatch(t) for t in c.page.allowed_types),
           "page.allowed_types must list MIME types (image/png, image/*) or extensions (.pdf)",
           ("page.allowed_types",))
    yield (c.logging.format in LOG_FORMATS, "logging.format must be one of: text, json",
           ("logging.format",))
    yield (c.logging.level.upper() in LOG_LEVELS,
           "logging.level must be one of: " + ", ".join(LOG_LEVELS), ("logging.level",))


def _backend_checks(c: Config) -> Iterable[Check]:
    yield (c.storage.backend in ("local", "s3"), "storage.backend must be one of: local, s3",
           ("storage.backend",))
    yield (c.storage.io_threads >= 1, "storage.io_threads must be >= 1", ("storage.io_threads",))
    yield (c.storage.stale_part_age >= 0, "storage.stale_part_age must be >= 0",
           ("storage.stale_part_age",))
    yield (c.store.backend in ("sqlite", "mysql"), "store.backend must be one of: sqlite, mysql",
           ("store.backend",))
    yield (c.store.pool_size >= 1, "store.pool_size must be >= 1", ("store.pool_size",))
    if c.store.backend == "mysql":
        try:
            parse_dsn(c.store.mysql_dsn)
        except ValueError as exc:
            yield (False, f"store.mysql_dsn: {exc}", ("store.mysql_dsn", "store.backend"))
    yield (c.locks.backend in LOCK_BACKENDS,
           "locks.backend must be one of: " + ", ".join(LOCK_BACKENDS), ("locks.backend",))
    if c.locks.backend == "mysql":
        yield (c.store.backend == "mysql" or bool(c.locks.mysql_dsn),
               "locks.backend mysql needs store.backend mysql or locks.mysql_dsn",
               ("locks.backend", "locks.mysql_dsn", "store.backend"))
        if c.locks.mysql_dsn:
            try:
                parse_dsn(c.locks.mysql_dsn)
            except ValueError as exc:
                yield (False, f"locks.mysql_dsn: {exc}", ("locks.mysql_dsn", "locks.backend"))
    yield (c.locks.mysql_pool_size >= 1, "locks.mysql_pool_size must be >= 1",
           ("locks.mysql_pool_size",))
    if c.locks.backend == "etcd":
        yield (bool(c.locks.etcd_endpoints), "locks.etcd_endpoints must name at least one URL",
               ("locks.etcd_endpoints", "locks.backend"))
    yield (all(u.startswith(("http://", "https://")) for u in c.locks.etcd_endpoints),
           "locks.etcd_endpoints must be http:// or https:// URLs", ("locks.etcd_endpoints",))
    if c.locks.backend == "redis":
        yield (c.locks.redis_url.startswith(("redis://", "rediss://", "unix://")),
               "locks.redis_url must start with redis://, rediss:// or unix://",
               ("locks.redis_url", "locks.backend"))
    yield (c.locks.ttl >= 1, "locks.ttl must be >= 1", ("locks.ttl",))
    yield (c.merge.wait_seconds >= 0, "merge.wait_seconds must be >= 0", ("merge.wait_seconds",))
    yield (c.merge.background_over >= 0, "merge.background_over must be >= 0",
           ("merge.background_over",))
    yield (0 <= c.merge.fold_nice <= 19, "merge.fold_nice must be between 0 and 19",
           ("merge.fold_nice",))
    yield (c.expiry.ttl >= 1, "expiry.ttl must be >= 1", ("expiry.ttl",))
    yield (c.expiry.interval >= 1, "expiry.interval must be >= 1", ("expiry.interval",))
    yield (0 <= c.expiry.jitter < 1, "expiry.jitter must be >= 0 and < 1", ("expiry.jitter",))
    yield (1 <= c.expiry.batch_size <= 10000, "expiry.batch_size must be between 1 and 10000",
           ("expiry.batch_size",))


def _s3_checks(c: Config) -> Iterable[Check]:
    s3 = c.s3
    yield (s3.download in ("redirect", "stream"), "s3.download must be one of: redirect, stream",
           ("s3.download",))
    yield (s3.direct_verify in ("parts", "readback"),
           "s3.direct_verify must be one of: parts, readback", ("s3.direct_verify",))
    yield (s3.addressing_style in ("auto", "path", "virtual"),
           "s3.addressing_style must be one of: auto, path, virtual", ("s3.addressing_style",))
    # SigV4 presigned URLs live at most 7 days.
    yield (1 <= s3.presign_expiry <= 604800, "s3.presign_expiry must be between 1 and 604800",
           ("s3.presign_expiry",))
    yield (bool(s3.access_key_id) == bool(s3.secret_access_key),
           "s3.access_key_id and s3.secret_access_key must be given together",
           ("s3.access_key_id", "s3.secret_access_key"))
    yield (not s3.prefix.startswith("/"), "s3.prefix must not start with /", ("s3.prefix",))
    # Keys are prefix + 32-char id + "_" + a name of up to 200 bytes, and
    # storage_key holds 512.
    yield (len(s3.prefix.encode()) <= 256, "s3.prefix must be at most 256 bytes", ("s3.prefix",))
    if c.storage.backend == "s3":
        yield (bool(s3.bucket), "s3.bucket is required when storage.backend is s3",
               ("s3.bucket", "storage.backend"))
        yield (c.limits.chunk_size_default >= 5 * MiB,
               "limits.chunk_size_default must be >= 5MiB when storage.backend is s3",
               ("limits.chunk_size_default", "storage.backend"))


def _limit_checks(c: Config) -> Iterable[Check]:
    """Quotas, rate limits, slow-client timeouts, CORS."""
    quota, rl, conn = c.quota, c.ratelimit, c.connections
    yield (quota.max_active_uploads >= 0, "quota.max_active_uploads must be >= 0",
           ("quota.max_active_uploads",))
    yield (quota.max_reserved_bytes >= 0, "quota.max_reserved_bytes must be >= 0",
           ("quota.max_reserved_bytes",))
    yield (c.storage.min_free_bytes >= 0, "storage.min_free_bytes must be >= 0",
           ("storage.min_free_bytes",))
    yield (rl.owner_rate >= 0, "ratelimit.owner_rate must be >= 0", ("ratelimit.owner_rate",))
    yield (rl.address_rate >= 0, "ratelimit.address_rate must be >= 0",
           ("ratelimit.address_rate",))
    yield (rl.owner_rate == 0 or rl.owner_burst >= 1,
           "ratelimit.owner_burst must be >= 1 when owner_rate is set",
           ("ratelimit.owner_burst", "ratelimit.owner_rate"))
    yield (rl.address_rate == 0 or rl.address_burst >= 1,
           "ratelimit.address_burst must be >= 1 when address_rate is set",
           ("ratelimit.address_burst", "ratelimit.address_rate"))
    for name in ("header_timeout", "body_timeout", "chunk_idle_timeout"):
        yield (getattr(conn, name) > 0, f"connections.{name} must be > 0", (f"connections.{name}",))
    yield (conn.min_chunk_rate >= 1, "connections.min_chunk_rate must be >= 1",
           ("connections.min_chunk_rate",))
    yield (conn.max_per_address >= 0, "connections.max_per_address must be >= 0",
           ("connections.max_per_address",))
    yield (c.cors.max_age >= 0, "cors.max_age must be >= 0", ("cors.max_age",))
    for origin in c.cors.allow_origins:
        yield (bool(ORIGIN_RE.match(origin)),
               f"cors.allow_origins: {origin!r} must be scheme://host[:port] or *",
               ("cors.allow_origins",))


def _link_checks(c: Config) -> Iterable[Check]:
    # A short key can be guessed offline from one link and its signature.
    yield (not c.links.secret or len(c.links.secret) >= 32,
           "links.secret must be at least 32 characters (or empty: a random one per process)",
           ("links.secret",))
    yield (1 <= c.links.expiry <= 604800, "links.expiry must be between 1 and 604800",
           ("links.expiry",))


def _check_auth(config: Config) -> None:
    auth = config.auth
    for owner, digest in auth.tokens.items():
        if not OWNER_RE.match(owner):
            raise ConfigError(f"auth.tokens: owner name {owner!r} must be 1-64 characters of "
                              f"letters, digits, '.', '_', '@', '-'", keys=("auth.tokens",))
        if not SHA256_RE.match(digest):
            raise ConfigError(f"auth.tokens.{owner} must be a SHA-256 hex digest "
                              f"(64 lowercase hex characters; see `uploader hash-token`)",
                              keys=("auth.tokens",))
    if len(set(auth.tokens.values())) != len(auth.tokens):
        raise ConfigError("auth.tokens: two owners share one token hash", keys=("auth.tokens",))
    if auth.enabled and not auth.tokens:
        raise ConfigError("auth.tokens must not be empty when auth.enabled is true",
                          keys=("auth.tokens", "auth.enabled"))
    if not auth.enabled and not auth.allow_anonymous_remote \
            and not is_loopback(config.server.host):
        raise ConfigError(anonymous_remote_message(config.server.host),
                          keys=("server.host", "auth.enabled", "auth.allow_anonymous_remote"))


def _check_installed(config: Config) -> None:
    """A backend whose extra is not installed fails here, at start, in one
    line, instead of as an ImportError traceback on first use."""
    if config.storage.backend == "s3":
        try:
            importlib.import_module("aiobotocore")
        except ImportError:
            raise ConfigError(f"storage.backend s3 needs the s3 extra: pip install "
                              f"'{DISTRIBUTION}[s3]'", keys=("storage.backend",)) from None
    if config.locks.backend == "etcd":
        try:
            importlib.import_module("aiohttp")
        except ImportError:
            raise ConfigError(f"locks.backend etcd needs the etcd extra: pip install "
                              f"'{DISTRIBUTION}[etcd]'", keys=("locks.backend",)) from None


def is_loopback(host: str) -> bool:
    """Only addresses that no other machine can reach count: an empty host
    or 0.0.0.0 binds every interface, a DNS name may resolve anywhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def anonymous_remote_message(host: str) -> str:
    return (f"server.host {host!r} is not a loopback address and auth.enabled is false: "
            f"enable auth (auth.enabled: true with auth.tokens) or set "
            f"auth.allow_anonymous_remote: true")


def _http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _events_checks(c: Config) -> Iterable[Check]:
    """Events, the pre-create hook and the merge queue."""
    ev, hooks = c.events, c.hooks
    yield (ev.poll_interval > 0, "events.poll_interval must be > 0", ("events.poll_interval",))
    yield (ev.claim_ttl >= 1, "events.claim_ttl must be >= 1", ("events.claim_ttl",))
    yield (ev.batch_size >= 1, "events.batch_size must be >= 1", ("events.batch_size",))
    yield (ev.stream_maxlen >= 1, "events.stream_maxlen must be >= 1", ("events.stream_maxlen",))
    yield (ev.retention >= 60, "events.retention must be >= 60", ("events.retention",))
    yield (bool(ev.stream), "events.stream must not be empty", ("events.stream",))
    yield (not ev.redis_url or ev.redis_url.startswith(("redis://", "rediss://", "unix://")),
           "events.redis_url must be a redis:// URL or empty", ("events.redis_url",))
    yield (not hooks.pre_create_url or _http_url(hooks.pre_create_url),
           "hooks.pre_create_url must be an http(s) URL or empty", ("hooks.pre_create_url",))
    yield (hooks.timeout > 0, "hooks.timeout must be > 0", ("hooks.timeout",))
    merge = c.merge
    yield (merge.queue in ("memory", "redis"), "merge.queue must be one of: memory, redis",
           ("merge.queue",))
    yield (merge.workers in ("embedded", "external"),
           "merge.workers must be one of: embedded, external", ("merge.workers",))
    yield (merge.queue != "redis" or c.locks.backend != "memory",
           "merge.queue redis needs a shared locks.backend (redis, mysql or etcd): one lock "
           "per upload across instances", ("merge.queue", "locks.backend"))
    yield (merge.workers == "embedded" or merge.queue == "redis",
           "merge.workers external needs merge.queue: redis", ("merge.workers", "merge.queue"))
    yield (merge.concurrency >= 1, "merge.concurrency must be >= 1", ("merge.concurrency",))


def _secret_ok(secret: str) -> bool:
    raw = secret[len("whsec_"):] if secret.startswith("whsec_") else ""
    try:
        return 24 <= len(base64.b64decode(raw, validate=True)) <= 64
    except (binascii.Error, ValueError):
        return False


def _webhook_checks(c: Config) -> Iterable[Check]:
    wh = c.webhooks
    yield (wh.timeout > 0, "webhooks.timeout must be > 0", ("webhooks.timeout",))
    yield (wh.retry_for >= 0, "webhooks.retry_for must be >= 0", ("webhooks.retry_for",))
    yield (wh.backoff_base > 0, "webhooks.backoff_base must be > 0", ("webhooks.backoff_base",))
    yield (wh.backoff_max >= wh.backoff_base, "webhooks.backoff_max must be >= backoff_base",
           ("webhooks.backoff_max", "webhooks.backoff_base"))
    yield (wh.concurrency >= 1, "webhooks.concurrency must be >= 1", ("webhooks.concurrency",))
    names: set[str] = set()
    key = ("webhooks.endpoints",)
    for i, endpoint in enumerate(wh.endpoints):
        where = f"webhooks.endpoints[{i}]"
        if not endpoint.name and _http_url(endpoint.url):
            endpoint.name = (urlsplit(endpoint.url).netloc or "webhook").replace(":", "_")
        yield (_http_url(endpoint.url), f"{where}.url must be an http(s) URL", key)
        yield (_secret_ok(endpoint.secret),
               f"{where}.secret must be whsec_ followed by base64 of 24-64 bytes", key)
        yield (all(e in EVENT_TYPES for e in endpoint.events),
               f"{where}.events must be among: " + ", ".join(EVENT_TYPES), key)
        yield (bool(WEBHOOK_NAME_RE.match(endpoint.name)),
               f"{where}.name must be 1-48 letters, digits, '.', '_' or '-'", key)
        yield (endpoint.name not in names, f"{where}.name {endpoint.name!r} is used twice", key)
        names.add(endpoint.name)
