"""Settings of events, webhooks, the pre-create hook and the merge queue,
kept beside config.py (which holds the table of every section) so that file
stays a plain list of defaults."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .config import Config

NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,47}\Z")


@dataclass
class EventsConfig:
    # Write lifecycle events to the outbox (the events table) and dispatch them.
    enabled: bool = True
    # Redis Streams sink: empty = no stream. Several instances may share it.
    redis_url: str = ""
    stream: str = "uploader:events"
    # XADD ... MAXLEN ~ this many entries (older ones are trimmed).
    stream_maxlen: int = 100_000
    # Seconds between outbox polls when nothing wakes the dispatcher sooner
    # (a change in this process wakes it at once).
    poll_interval: float = 1.0
    # Seconds a dispatcher owns the events it claimed; a dead one's claims
    # are taken over after this.
    claim_ttl: float = 30.0
    batch_size: int = 100
    # Seconds dispatched events (and finished deliveries) stay in the table.
    retention: float = 7 * 24 * 3600.0


@dataclass
class WebhookEndpoint:
    url: str
    # Standard Webhooks secret: "whsec_" + base64 of 24-64 random bytes.
    secret: str = field(repr=False)
    # Event types sent to this URL; empty = all.
    events: list[str] = field(default_factory=list)
    # Label in metrics and in the deliveries table; default: the URL's host.
    name: str = ""

    @property
    def sink(self) -> str:
        return f"webhook:{self.name}"

    def wants(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


@dataclass
class WebhooksConfig:
    # [{url, secret, events?: [types], name?}]; env: a JSON list.
    endpoints: list[WebhookEndpoint] = field(default_factory=list)
    # Seconds one POST may take (connect included); then it counts as failed.
    timeout: float = 10.0
    # Seconds from the event on during which failed deliveries are retried;
    # then the delivery is kept as failed (uploader_events_failed_total).
    retry_for: float = 24 * 3600.0
    # First retry delay in seconds; doubles per attempt up to backoff_max.
    backoff_base: float = 1.0
    backoff_max: float = 600.0
    # POSTs in flight at once per instance (a hanging receiver holds one).
    concurrency: int = 8


@dataclass
class HooksConfig:
    # Blocking pre-create hook: POSTed before every upload is created; empty = none.
    pre_create_url: str = ""
    # Seconds to wait for its answer; no answer in time (or no hook): 503.
    timeout: float = 5.0
    # Request headers passed on to the hook (case-insensitive).
    forward_headers: list[str] = field(default_factory=lambda: ["Authorization", "Cookie"])


def coerce_endpoints(value: Any, key: str) -> list[WebhookEndpoint]:
    """From YAML a list of mappings; from the environment a JSON list."""
    from .config import ConfigError
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            raise ConfigError(f"{key} must be a JSON list of {{url, secret, events}}") from None
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be a list of {{url, secret, events}}")
    endpoints = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if isinstance(item, WebhookEndpoint):
            endpoints.append(item)
            continue
        if not isinstance(item, dict) or set(item) - {"url", "secret", "events", "name"}:
            raise ConfigError(f"{where} must be a mapping of url, secret, events, name")
        events = item.get("events") or []
        if not isinstance(events, list):
            raise ConfigError(f"{where}.events must be a list of event types")
        endpoints.append(WebhookEndpoint(url=str(item.get("url") or ""),
                                         secret=str(item.get("secret") or ""),
                                         events=[str(e) for e in events],
                                         name=str(item.get("name") or "")))
    return endpoints


def _secret_ok(secret: str) -> bool:
    raw = secret[len("whsec_"):] if secret.startswith("whsec_") else ""
    try:
        return 24 <= len(base64.b64decode(raw, validate=True)) <= 64
    except (binascii.Error, ValueError):
        return False


def _http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def validate_events(config: "Config") -> list[tuple[bool, str]]:
    from .events.model import EVENT_TYPES
    ev, wh, hooks = config.events, config.webhooks, config.hooks
    checks = [
        (ev.poll_interval > 0, "events.poll_interval must be > 0"),
        (ev.claim_ttl >= 1, "events.claim_ttl must be >= 1"),
        (ev.batch_size >= 1, "events.batch_size must be >= 1"),
        (ev.stream_maxlen >= 1, "events.stream_maxlen must be >= 1"),
        (ev.retention >= 60, "events.retention must be >= 60"),
        (bool(ev.stream), "events.stream must not be empty"),
        (not ev.redis_url or ev.redis_url.startswith(("redis://", "rediss://", "unix://")),
         "events.redis_url must be a redis:// URL or empty"),
        (wh.timeout > 0, "webhooks.timeout must be > 0"),
        (wh.retry_for >= 0, "webhooks.retry_for must be >= 0"),
        (wh.backoff_base > 0, "webhooks.backoff_base must be > 0"),
        (wh.backoff_max >= wh.backoff_base, "webhooks.backoff_max must be >= backoff_base"),
        (wh.concurrency >= 1, "webhooks.concurrency must be >= 1"),
        (not hooks.pre_create_url or _http_url(hooks.pre_create_url),
         "hooks.pre_create_url must be an http(s) URL or empty"),
        (hooks.timeout > 0, "hooks.timeout must be > 0"),
    ]
    names: set[str] = set()
    for i, endpoint in enumerate(wh.endpoints):
        where = f"webhooks.endpoints[{i}]"
        if not endpoint.name and _http_url(endpoint.url):
            endpoint.name = (urlsplit(endpoint.url).netloc or "webhook").replace(":", "_")
        checks += [
            (_http_url(endpoint.url), f"{where}.url must be an http(s) URL"),
            (_secret_ok(endpoint.secret),
             f"{where}.secret must be whsec_ followed by base64 of 24-64 bytes"),
            (all(e in EVENT_TYPES for e in endpoint.events),
             f"{where}.events must be among: " + ", ".join(EVENT_TYPES)),
            (bool(NAME_RE.match(endpoint.name)),
             f"{where}.name must be 1-48 letters, digits, '.', '_' or '-'"),
            (endpoint.name not in names, f"{where}.name {endpoint.name!r} is used twice"),
        ]
        names.add(endpoint.name)
    return checks
