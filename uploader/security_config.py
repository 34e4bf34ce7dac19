"""Parsing and validation of the security settings (auth, quota, ratelimit,
connections, cors), kept out of config.py so that file stays a plain table
of defaults.
"""

from __future__ import annotations

import ipaddress
import re
import typing
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config

# Owner names end up in the uploads.owner column (VARCHAR(64)) and in logs:
# a conservative alphabet keeps them printable and unambiguous.
OWNER_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")
SHA256_RE = re.compile(r"\A[0-9a-f]{64}\Z")
ORIGIN_RE = re.compile(r"\A(\*|https?://[^/\s?#]+)\Z")


def _error(message: str) -> Exception:
    from .config import ConfigError
    return ConfigError(message)


def coerce_collection(value: Any, kind: Any, key: str) -> Any:
    """Mappings and lists from YAML as they are; from an environment variable
    (a string) as ``owner:sha256,owner2:sha256`` or ``a,b``."""
    origin = typing.get_origin(kind)
    if origin is dict:
        if isinstance(value, str):
            pairs: dict[str, str] = {}
            for item in filter(None, (p.strip() for p in value.split(","))):
                owner, sep, digest = item.partition(":")
                if not sep:
                    raise _error(f"{key} must look like owner:sha256[,owner2:sha256]")
                pairs[owner.strip()] = digest.strip()
            return pairs
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _error(f"{key} must be a mapping")
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if value is None:
        return []
    if not isinstance(value, list):
        raise _error(f"{key} must be a list")
    return [str(v) for v in value]


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


def validate_security(config: "Config") -> None:
    auth = config.auth
    for owner, digest in auth.tokens.items():
        if not OWNER_RE.match(owner):
            raise _error(f"auth.tokens: owner name {owner!r} must be 1-64 characters of "
                         f"letters, digits, '.', '_', '@', '-'")
        if not SHA256_RE.match(digest):
            raise _error(f"auth.tokens.{owner} must be a SHA-256 hex digest "
                         f"(64 lowercase hex characters; see `uploader hash-token`)")
    if len(set(auth.tokens.values())) != len(auth.tokens):
        raise _error("auth.tokens: two owners share one token hash")
    if auth.enabled and not auth.tokens:
        raise _error("auth.tokens must not be empty when auth.enabled is true")
    if not auth.enabled and not auth.allow_anonymous_remote \
            and not is_loopback(config.server.host):
        raise _error(anonymous_remote_message(config.server.host))
    quota = config.quota
    rl = config.ratelimit
    conn = config.connections
    checks = [
        (quota.max_active_uploads >= 0, "quota.max_active_uploads must be >= 0"),
        (quota.max_reserved_bytes >= 0, "quota.max_reserved_bytes must be >= 0"),
        (config.storage.min_free_bytes >= 0, "storage.min_free_bytes must be >= 0"),
        (rl.owner_rate >= 0, "ratelimit.owner_rate must be >= 0"),
        (rl.address_rate >= 0, "ratelimit.address_rate must be >= 0"),
        (rl.owner_rate == 0 or rl.owner_burst >= 1,
         "ratelimit.owner_burst must be >= 1 when owner_rate is set"),
        (rl.address_rate == 0 or rl.address_burst >= 1,
         "ratelimit.address_burst must be >= 1 when address_rate is set"),
        (conn.header_timeout > 0, "connections.header_timeout must be > 0"),
        (conn.body_timeout > 0, "connections.body_timeout must be > 0"),
        (conn.chunk_idle_timeout > 0, "connections.chunk_idle_timeout must be > 0"),
        (conn.min_chunk_rate >= 1, "connections.min_chunk_rate must be >= 1"),
        (conn.max_per_address >= 0, "connections.max_per_address must be >= 0"),
        (config.cors.max_age >= 0, "cors.max_age must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise _error(message)
    for origin in config.cors.allow_origins:
        if not ORIGIN_RE.match(origin):
            raise _error(f"cors.allow_origins: {origin!r} must be scheme://host[:port] or *")
