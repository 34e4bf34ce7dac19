"""config.yaml documents every key with its default; overrides and validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from uploader.config import Config, ConfigError, load_config, parse_size

ROOT = Path(__file__).resolve().parent.parent


def test_config_yaml_lists_every_key_with_its_default() -> None:
    documented = yaml.safe_load((ROOT / "config.yaml").read_text())
    defaults = dataclasses.asdict(Config())
    assert set(documented) == set(defaults)
    for section, values in defaults.items():
        assert set(documented[section]) == set(values), section
    loaded = dataclasses.asdict(load_config(ROOT / "config.yaml", env={}))
    assert loaded == defaults


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  port: 9000\nlimits:\n  chunk_size_default: 1MiB\n")
    config = load_config(path, env={"UPLOADER_SERVER_PORT": "9100",
                                    "UPLOADER_STORAGE_FSYNC": "false",
                                    "UPLOADER_LIMITS_MAX_FILE_SIZE": "2GiB",
                                    "UNRELATED": "x"})
    assert config.server.port == 9100
    assert config.storage.fsync is False
    assert config.limits.max_file_size == 2 << 30
    assert config.limits.chunk_size_default == 1 << 20


@pytest.mark.parametrize("overrides, message", [
    ({"limits": {"chunk_size_min": 2048, "chunk_size_max": 1024, "chunk_size_default": 1024}},
     "limits.chunk_size_max must be >= chunk_size_min"),
    ({"server": {"port": 0}}, "server.port must be between 1 and 65535"),
    ({"server": {"port": "eighty"}}, "server.port must be an integer"),
    ({"store": {"backend": "postgres"}}, "store.backend must be one of: sqlite, mysql"),
    ({"locks": {"backend": "zookeeper"}},
     "locks.backend must be one of: memory, redis, mysql, etcd"),
    ({"locks": {"backend": "mysql"}},
     "locks.backend mysql needs store.backend mysql or locks.mysql_dsn"),
    ({"locks": {"mysql_pool_size": 0}}, "locks.mysql_pool_size must be >= 1"),
    ({"locks": {"backend": "etcd", "etcd_endpoints": []}},
     "locks.etcd_endpoints must name at least one URL"),
    ({"locks": {"etcd_endpoints": "127.0.0.1:2379"}},
     "locks.etcd_endpoints must be http:// or https:// URLs"),
    ({"limits": {"max_file_size": "lots"}}, "limits.max_file_size must be a size"),
    ({"storage": {"fsync": "maybe"}}, "storage.fsync must be true or false"),
    ({"server": {"colour": "blue"}}, "unknown setting server.colour"),
    ({"nonsense": {}}, "unknown section nonsense"),
])
def test_validation_names_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides=overrides)
    assert message in str(info.value)


def test_parse_size() -> None:
    assert parse_size("64KiB", "k") == 65536
    assert parse_size("50 GiB", "k") == 50 << 30
    assert parse_size(123, "k") == 123
    with pytest.raises(ConfigError):
        parse_size(True, "k")


@pytest.mark.parametrize("text, value", [
    ("8388608", 8 << 20), ("8MiB", 8 << 20), ("8M", 8 << 20), ("8 mib", 8 << 20),
    ("512K", 512 << 10), ("8MB", 8_000_000), ("1GB", 10**9), ("2T", 2 << 40),
])
def test_one_size_grammar_for_config_and_cli(text: str, value: int) -> None:
    """config.yaml, the environment and `uploader upload --chunk-size` read a
    size the same way (8M used to work on the command line only)."""
    from uploader.client_cli import parse_size as cli_size
    from_env = load_config(None, env={"UPLOADER_LIMITS_MAX_FILE_SIZE": text})
    from_file = load_config(None, env={}, overrides={"limits": {"max_file_size": text}})
    assert from_env.limits.max_file_size == from_file.limits.max_file_size == value
    assert cli_size(text) == value


@pytest.mark.parametrize("text", ["8 parsecs", "8Mi", "-1M", "1.5GiB", "M",
                                  # Issue 13.9: ASCII digits only, of bounded length.
                                  "\uff18MiB", "\u0668M", "1_000", "9" * 5000])
def test_sizes_refused_alike(text: str) -> None:
    import argparse

    from uploader.client_cli import parse_size as cli_size
    with pytest.raises(ConfigError, match="must be a size"):
        load_config(None, env={}, overrides={"limits": {"max_file_size": text}})
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        cli_size(text)
