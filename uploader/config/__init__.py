"""Typed configuration: config.yaml, then UPLOADER_<SECTION>_<KEY> overrides.

By job: ``schema`` (every key and its default), ``parsing`` (file,
environment, units, where each value came from), ``validation`` (ranges,
keys that go together, security, what a backend needs installed). The names
below are the package's public face.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..units import GiB, KiB, MiB
from .errors import ConfigError
from .parsing import CLIENT_ENV, CLIENT_ENV_PREFIX, ENV_PREFIX, load_config, parse_size
from .schema import (LOG_FORMATS, LOG_LEVELS, AuthConfig, Config, ConnectionsConfig,
                     CorsConfig, EventsConfig, ExpiryConfig, HooksConfig, LimitsConfig, LinksConfig,
                     LocksConfig, LoggingConfig, MergeConfig, PageConfig, QuotaConfig,
                     RateLimitConfig, S3Config, ServerConfig, StorageConfig, StoreConfig,
                     WebhookEndpoint, WebhooksConfig)
from .validation import anonymous_remote_message, is_loopback, validate


def as_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


__all__ = [
    "CLIENT_ENV", "CLIENT_ENV_PREFIX", "ENV_PREFIX", "GiB", "KiB", "LOG_FORMATS", "LOG_LEVELS",
    "MiB", "AuthConfig", "Config", "ConfigError", "ConnectionsConfig", "CorsConfig",
    "EventsConfig", "ExpiryConfig", "HooksConfig", "LimitsConfig", "LinksConfig",
    "LocksConfig",
    "LoggingConfig", "MergeConfig", "PageConfig", "QuotaConfig", "RateLimitConfig", "S3Config",
    "ServerConfig", "StorageConfig", "StoreConfig", "WebhookEndpoint", "WebhooksConfig",
    "anonymous_remote_message", "as_dict", "is_loopback", "load_config", "parse_size",
    "validate",
]
