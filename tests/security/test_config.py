"""The security settings: documented in config.yaml with their defaults,
validated with exact messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from uploader.config import Config, ConfigError, as_dict, load_config

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("auth", "quota", "ratelimit", "connections", "cors", "links")


def test_config_yaml_documents_every_security_default():
    loaded = as_dict(load_config(ROOT / "config.yaml", env={}))
    defaults = as_dict(Config())
    for section in SECTIONS:
        assert loaded[section] == defaults[section], section
    assert loaded["storage"]["min_free_bytes"] == defaults["storage"]["min_free_bytes"]


def test_env_overrides():
    config = load_config(None, env={"UPLOADER_RATELIMIT_OWNER_RATE": "2.5",
                                    "UPLOADER_RATELIMIT_OWNER_BURST": "10",
                                    "UPLOADER_CORS_ALLOW_ORIGINS": "https://a.example, https://b.example",
                                    "UPLOADER_CONNECTIONS_MIN_CHUNK_RATE": "1MiB",
                                    "UPLOADER_STORAGE_MIN_FREE_BYTES": "2GiB"})
    assert config.ratelimit.owner_rate == 2.5 and config.ratelimit.owner_burst == 10
    assert config.cors.allow_origins == ["https://a.example", "https://b.example"]
    assert config.connections.min_chunk_rate == 1 << 20
    assert config.storage.min_free_bytes == 2 << 30


@pytest.mark.parametrize("overrides, message", [
    ({"ratelimit": {"owner_rate": 1}}, "ratelimit.owner_burst must be >= 1 when owner_rate is set"),
    ({"ratelimit": {"address_rate": -1}}, "ratelimit.address_rate must be >= 0"),
    ({"connections": {"chunk_idle_timeout": 0}}, "connections.chunk_idle_timeout must be > 0"),
    ({"connections": {"max_per_address": -1}}, "connections.max_per_address must be >= 0"),
    ({"quota": {"max_active_uploads": -1}}, "quota.max_active_uploads must be >= 0"),
    ({"cors": {"allow_origins": ["evil.example"]}},
     "cors.allow_origins: 'evil.example' must be scheme://host[:port] or *"),
    ({"cors": {"allow_origins": "https://a.example/path"}},
     "cors.allow_origins: 'https://a.example/path' must be scheme://host[:port] or *"),
    ({"links": {"secret": "short"}},
     "links.secret must be at least 32 characters (or empty: a random one per process)"),
    ({"links": {"expiry": 0}}, "links.expiry must be between 1 and 604800"),
])
def test_validation_messages(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides=overrides)
    assert str(info.value) == message
