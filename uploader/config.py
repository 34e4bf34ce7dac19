"""Typed configuration: config.yaml, then UPLOADER_<SECTION>_<KEY> overrides.

Every key and its default lives in the dataclasses below and in config.yaml
(kept in step by tests/test_config.py). Validation names the exact key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .events_config import EventsConfig, HooksConfig, WebhooksConfig

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B|B)?\s*$", re.I)
_UNITS = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
          "KIB": KiB, "MIB": MiB, "GIB": GiB, "TIB": 1 << 40}


class ConfigError(ValueError):
    pass


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8888
    # Seconds a keep-alive connection may sit idle between requests.
    idle_connection_timeout: float = 60.0
    # Bytes Tornado reads from the socket at a time while streaming a chunk.
    read_chunk_size: int = MiB
    # Bytes of one chunk body queued for hashing and writing before reading
    # pauses: bounds memory per stream (16 streams x this).
    max_buffered: int = MiB
    # Largest non-chunk request body (JSON).
    max_json_body: int = 64 * KiB
    # Trust X-Forwarded-For / X-Real-Ip from a reverse proxy.
    xheaders: bool = False
    # Seconds SIGTERM/SIGINT waits for in-flight requests (chunk PUTs) to
    # finish before cutting them; cut chunks are dropped, never recorded.
    shutdown_timeout: float = 30.0


@dataclass
class LimitsConfig:
    max_file_size: int = 50 * GiB
    chunk_size_min: int = 64 * KiB
    chunk_size_max: int = 64 * MiB
    chunk_size_default: int = 8 * MiB
    max_chunks: int = 10_000
    # Parallel chunk PUTs the browser page uses per file.
    parallel_chunks: int = 4


@dataclass
class StorageConfig:
    backend: str = "local"
    data_dir: str = "data"
    # fsync each chunk before answering 200, and each merged file before it is
    # published. Off trades crash durability for speed.
    fsync: bool = True
    # Worker threads for hashing and file I/O.
    io_threads: int = 8
    # Seconds after which an untouched .part file counts as a crashed
    # writer's leftover (removed at start and by the expiry sweep). With
    # several instances on one data_dir keep it above the longest chunk PUT.
    stale_part_age: float = 3600.0
    # Free disk space kept in reserve: init and chunk calls answer 507 once
    # the bytes that active uploads still need would eat into it.
    min_free_bytes: int = 512 * MiB


@dataclass
class S3Config:
    """Used when storage.backend is s3 (ARCHITECTURE.md section 4, docs/s3.md)."""

    # Empty: AWS itself. MinIO, Ceph, R2, moto: their URL.
    endpoint_url: str = ""
    bucket: str = ""
    # Prepended to every object key, e.g. "uploads/".
    prefix: str = ""
    region: str = "us-east-1"
    # Both empty: the standard AWS chain (environment, ~/.aws, instance role).
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)  # kept out of logs
    # auto, path or virtual (path for most self-hosted S3 servers).
    addressing_style: str = "auto"
    # Clients PUT chunk bytes straight to S3 through presigned URLs.
    direct: bool = False
    # Seconds a presigned URL (part upload or download) stays valid.
    presign_expiry: int = 300
    # redirect: 302 to a presigned GET; stream: the server relays the bytes.
    download: str = "redirect"


@dataclass
class StoreConfig:
    backend: str = "sqlite"
    # Empty: <data_dir>/uploader.db.
    sqlite_path: str = ""
    mysql_dsn: str = "mysql://root@127.0.0.1:3306/uploader"
    pool_size: int = 10


@dataclass
class LocksConfig:
    backend: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Prefix of every lock key: deployments sharing one Redis keep apart.
    redis_prefix: str = "uploader:lock:"
    # Seconds before a crashed holder's lock frees itself (a live holder's
    # watchdog keeps extending it).
    ttl: float = 30.0


@dataclass
class MergeConfig:
    # How long complete waits for a merge before answering 202 "merging".
    wait_seconds: float = 20.0
    # complete answers 202 "merging" at once when more than this many bytes
    # are left to merge (status shows merged_bytes meanwhile).
    background_over: int = GiB
    # Fold chunks into the merged file (and its MD5) while they arrive, in the
    # process that receives them, so complete has little left (local storage).
    incremental: bool = True
    # Nice value of the thread that folds chunks (0-19). Higher: folding uses
    # only idle CPU and never slows ingest; what it could not fold is merged
    # at complete. 0: folding competes with ingest for CPU.
    fold_nice: int = 0


@dataclass
class ExpiryConfig:
    enabled: bool = True
    # Seconds of inactivity after which an unfinished upload is removed.
    ttl: int = 7 * 24 * 3600
    # Seconds between sweeps (each one jittered by +-jitter fraction).
    interval: float = 3600.0
    jitter: float = 0.1


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass
class LoggingConfig:
    # text: human-readable lines; json: one JSON object per line (for log
    # shippers). Access lines carry the same fields in both.
    format: str = "text"
    level: str = "INFO"


@dataclass
class AuthConfig:
    # Require "Authorization: Bearer <token>" on every API call.
    enabled: bool = False
    # owner name -> SHA-256 hex of that owner's token (`uploader hash-token`).
    # Only hashes are stored: a leaked config does not leak the tokens.
    tokens: dict[str, str] = field(default_factory=dict)
    # Serve without auth on a non-loopback address anyway (behind a trusted
    # proxy that authenticates). Off: the server refuses to start.
    allow_anonymous_remote: bool = False


@dataclass
class QuotaConfig:
    # Uploads an owner may have in_progress or merging at once (0: no cap).
    max_active_uploads: int = 1000
    # Bytes an owner may have reserved by active uploads (0: no quota).
    max_reserved_bytes: int = 0


@dataclass
class RateLimitConfig:
    # Token buckets on init and chunk calls; rate in requests per second,
    # burst the bucket size. 0 turns a bucket off (the default: the page
    # and benchmarks send many chunks quickly).
    owner_rate: float = 0.0
    owner_burst: int = 0
    address_rate: float = 0.0
    address_burst: int = 0


@dataclass
class ConnectionsConfig:
    # Seconds a client may take to send a request's headers (Tornado uses the
    # same timer for keep-alive idling, so the smaller of this and
    # server.idle_connection_timeout applies to both).
    header_timeout: float = 30.0
    # Seconds a JSON request body may take.
    body_timeout: float = 60.0
    # A chunk body that sends no byte for this many seconds is cut off.
    chunk_idle_timeout: float = 60.0
    # Slowest average rate (bytes/s) a chunk body may arrive at: its deadline
    # is chunk length / min_chunk_rate + chunk_idle_timeout.
    min_chunk_rate: int = 16 * KiB
    # Open connections one client address may hold (0: no cap).
    max_per_address: int = 128


@dataclass
class CorsConfig:
    # Origins (scheme://host[:port]) whose pages may call the API; empty: no
    # CORS headers at all (same-origin only). "*" allows any origin.
    allow_origins: list[str] = field(default_factory=list)
    # Seconds a browser may cache a preflight answer.
    max_age: int = 600


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    s3: S3Config = field(default_factory=S3Config)
    store: StoreConfig = field(default_factory=StoreConfig)
    locks: LocksConfig = field(default_factory=LocksConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    expiry: ExpiryConfig = field(default_factory=ExpiryConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    auth: AuthConfig = field(default_factory=AuthConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    connections: ConnectionsConfig = field(default_factory=ConnectionsConfig)
    cors: CorsConfig = field(default_factory=CorsConfig)

    events: EventsConfig = field(default_factory=EventsConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir).resolve()

    @property
    def sqlite_path(self) -> Path:
        return Path(self.store.sqlite_path).resolve() if self.store.sqlite_path \
            else self.data_dir / "uploader.db"

    def validate(self) -> "Config":
        lim = self.limits
        checks = [
            (lim.chunk_size_min >= 1, "limits.chunk_size_min must be >= 1"),
            (lim.chunk_size_max >= lim.chunk_size_min,
             "limits.chunk_size_max must be >= chunk_size_min"),
            (lim.chunk_size_min <= lim.chunk_size_default <= lim.chunk_size_max,
             "limits.chunk_size_default must be between chunk_size_min and chunk_size_max"),
            (lim.max_chunks >= 1, "limits.max_chunks must be >= 1"),
            (lim.max_file_size >= 0, "limits.max_file_size must be >= 0"),
            (lim.parallel_chunks >= 1, "limits.parallel_chunks must be >= 1"),
            (0 < self.server.port < 65536, "server.port must be between 1 and 65535"),
            (self.server.read_chunk_size >= 4 * KiB, "server.read_chunk_size must be >= 4KiB"),
            (self.server.max_buffered >= self.server.read_chunk_size,
             "server.max_buffered must be >= read_chunk_size"),
            (self.storage.backend in ("local", "s3"), "storage.backend must be one of: local, s3"),
            (self.storage.io_threads >= 1, "storage.io_threads must be >= 1"),
            (self.storage.stale_part_age >= 0, "storage.stale_part_age must be >= 0"),
            (self.store.backend in ("sqlite", "mysql"), "store.backend must be one of: sqlite, mysql"),
            (self.store.pool_size >= 1, "store.pool_size must be >= 1"),
            (self.locks.backend in ("memory", "redis"), "locks.backend must be one of: memory, redis"),
            (self.locks.ttl >= 1, "locks.ttl must be >= 1"),
            (self.merge.wait_seconds >= 0, "merge.wait_seconds must be >= 0"),
            (self.merge.background_over >= 0, "merge.background_over must be >= 0"),
            (0 <= self.merge.fold_nice <= 19, "merge.fold_nice must be between 0 and 19"),
            (self.expiry.ttl >= 1, "expiry.ttl must be >= 1"),
            (self.expiry.interval >= 1, "expiry.interval must be >= 1"),
            (0 <= self.expiry.jitter < 1, "expiry.jitter must be >= 0 and < 1"),
            (self.server.shutdown_timeout >= 0, "server.shutdown_timeout must be >= 0"),
            (self.logging.format in LOG_FORMATS, "logging.format must be one of: text, json"),
            (self.logging.level.upper() in LOG_LEVELS,
             "logging.level must be one of: " + ", ".join(LOG_LEVELS)),
        ]
        checks += self._s3_checks()
        from .events_config import validate_events
        checks += validate_events(self)
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        from .security_config import validate_security
        validate_security(self)
        return self

    def _s3_checks(self) -> list[tuple[bool, str]]:
        s3 = self.s3
        checks = [
            (s3.download in ("redirect", "stream"), "s3.download must be one of: redirect, stream"),
            (s3.addressing_style in ("auto", "path", "virtual"),
             "s3.addressing_style must be one of: auto, path, virtual"),
            # SigV4 presigned URLs live at most 7 days.
            (1 <= s3.presign_expiry <= 604800, "s3.presign_expiry must be between 1 and 604800"),
            (bool(s3.access_key_id) == bool(s3.secret_access_key),
             "s3.access_key_id and s3.secret_access_key must be given together"),
            (not s3.prefix.startswith("/"), "s3.prefix must not start with /"),
            # Keys are prefix + 32-char id + "_" + a name of up to 200 bytes,
            # and storage_key holds 512.
            (len(s3.prefix.encode()) <= 256, "s3.prefix must be at most 256 bytes"),
        ]
        if self.storage.backend == "s3":
            checks += [
                (bool(s3.bucket), "s3.bucket is required when storage.backend is s3"),
                (self.limits.chunk_size_default >= 5 * MiB,
                 "limits.chunk_size_default must be >= 5MiB when storage.backend is s3"),
            ]
        return checks


def parse_size(value: Any, key: str) -> int:
    """An int, or a string such as "64MiB" / "50 GiB" / "1000".
    bool is excluded: YAML's ``yes`` must not become 1 byte."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(m.group(1)) * _UNITS[(m.group(2) or "B").upper()]
    raise ConfigError(f"{key} must be a size (bytes, or a number with KiB/MiB/GiB), got {value!r}")


_SIZE_KEYS = {"max_file_size", "chunk_size_min", "chunk_size_max", "chunk_size_default",
              "read_chunk_size", "max_json_body", "min_free_bytes", "max_reserved_bytes",
              "min_chunk_rate", "background_over", "max_buffered"}


def _coerce(value: Any, kind: Any, key: str) -> Any:
    name = key.rsplit(".", 1)[-1]
    if name in _SIZE_KEYS:
        return parse_size(value, key)
    if key == "webhooks.endpoints":
        from .events_config import coerce_endpoints
        return coerce_endpoints(value, key)
    if typing.get_origin(kind) in (dict, list):
        from .security_config import coerce_collection
        return coerce_collection(value, kind, key)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if kind is int:
        try:
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be an integer, got {value!r}") from None
    if kind is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if kind is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    return value


def _apply(section: Any, values: Mapping[str, Any], prefix: str) -> None:
    hints = typing.get_type_hints(type(section))
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown setting {prefix}{key}")
        setattr(section, key, _coerce(value, hints[key], prefix + key))


def load_config(path: str | os.PathLike | None = None,
                env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
    """Defaults < YAML file < environment < ``overrides`` (tests, CLI flags)."""
    config = Config()
    layers: list[Mapping[str, Any]] = []
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        layers.append(data)
    env = os.environ if env is None else env
    from_env: dict[str, dict[str, str]] = {}
    sections = {f.name for f in dataclasses.fields(Config)}
    for name, value in env.items():
        if not name.startswith("UPLOADER_"):
            continue
        rest = name[len("UPLOADER_"):].lower()
        section, _, key = rest.partition("_")
        if section in sections and key:
            from_env.setdefault(section, {})[key] = value
    layers.append(from_env)
    if overrides:
        layers.append(overrides)
    for layer in layers:
        for section_name, values in layer.items():
            if section_name not in sections:
                raise ConfigError(f"unknown section {section_name}")
            if values is None:
                continue
            if not isinstance(values, Mapping):
                raise ConfigError(f"{section_name} must be a mapping")
            _apply(getattr(config, section_name), values, section_name + ".")
    return config.validate()


def as_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)
