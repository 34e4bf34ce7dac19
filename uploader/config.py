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


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    locks: LocksConfig = field(default_factory=LocksConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    expiry: ExpiryConfig = field(default_factory=ExpiryConfig)

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
            (self.storage.backend in ("local",), "storage.backend must be one of: local"),
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
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self


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
              "read_chunk_size", "max_json_body", "background_over",
              "max_buffered"}


def _coerce(value: Any, kind: Any, key: str) -> Any:
    name = key.rsplit(".", 1)[-1]
    if name in _SIZE_KEYS:
        return parse_size(value, key)
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
