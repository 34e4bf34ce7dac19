"""Reading the configuration: defaults < config file < environment <
in-code overrides (tests, command-line flags).

Every value is converted to its key's type here (sizes through the one
grammar of :mod:`uploader.units`) and remembers where it was set, so an
error names its source: ``config.yaml:18: ...``, ``env UPLOADER_SERVER_PORT:
...``, ``--port: ...``.

The environment: every variable whose name starts with ``UPLOADER_`` is a
setting ``UPLOADER_<SECTION>_<KEY>``, and one that names no setting is an
error (a typo must not be ignored), except the command-line client's own
variables: ``UPLOADER_URL``, ``UPLOADER_TOKEN`` and ``UPLOADER_CLIENT_*``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .. import units
from .errors import ConfigError
from .schema import SIZE_KEYS, Config, WebhookEndpoint
from .validation import validate

ENV_PREFIX = "UPLOADER_"
# Read by the command-line client (client_cli.py), never by the server.
CLIENT_ENV = frozenset({"UPLOADER_URL", "UPLOADER_TOKEN"})
CLIENT_ENV_PREFIX = "UPLOADER_CLIENT_"
SECTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Config))
KEYS: dict[str, tuple[str, ...]] = {
    name: tuple(f.name for f in dataclasses.fields(getattr(Config(), name))) for name in SECTIONS}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass
class Layer:
    """One source of settings: ``values`` maps sections to their settings as
    read (not yet converted); ``sources`` maps "section" and "section.key" to
    where each was written (absent: no location to show)."""

    values: Mapping[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    # Where the layer as a whole came from, for errors about its shape.
    label: str | None = None


def load_config(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Mapping[str, Any]] | None = None, *,
                override_sources: Mapping[str, str] | None = None) -> Config:
    """The validated configuration. ``env`` defaults to ``os.environ``;
    ``override_sources`` names where an override came from (``{"server.port":
    "--port"}``) for error messages."""
    layers: list[Layer] = []
    if path is not None:
        layers.append(read_yaml(path))
    layers.append(read_env(os.environ if env is None else env))
    if overrides:
        layers.append(Layer(overrides, dict(override_sources or {})))
    config = Config()
    where: dict[str, str] = {}  # "section.key" -> the source of its final value
    for layer in layers:
        _apply_layer(config, layer, where)
    try:
        validate(config)
    except ConfigError as exc:
        if exc.source is None:
            exc.source = next((where[key] for key in exc.keys if key in where), None)
        raise
    return config


def read_yaml(path: str | os.PathLike[str]) -> Layer:
    """The file's sections, with the line of every section and key."""
    label = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror or exc}",
                          source=label) from None
    except UnicodeDecodeError:
        raise ConfigError("the config file is not UTF-8 text", source=label) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{label}:{mark.line + 1}" if mark is not None else label
        problem = " ".join(filter(None, (exc.context, exc.problem)))
        raise ConfigError(f"not valid YAML: {problem}", source=where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=label) from None
    if data is None:
        return Layer({}, label=label)
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise ConfigError("the top level must be a mapping of sections (server:, limits:, ...)",
                          source=f"{label}:1")
    return Layer(data, _yaml_lines(root, label), label)


def _yaml_lines(root: yaml.MappingNode, label: str) -> dict[str, str]:
    sources: dict[str, str] = {}
    for key_node, value_node in root.value:
        section = str(key_node.value)
        sources[section] = f"{label}:{key_node.start_mark.line + 1}"
        if isinstance(value_node, yaml.MappingNode):
            for sub_key, _ in value_node.value:
                sources[f"{section}.{sub_key.value}"] = f"{label}:{sub_key.start_mark.line + 1}"
    return sources


def read_env(env: Mapping[str, str]) -> Layer:
    values: dict[str, dict[str, str]] = {}
    sources: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in CLIENT_ENV \
                or name.startswith(CLIENT_ENV_PREFIX):
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("_")
        if section not in SECTIONS or key not in _keys(section):
            raise ConfigError(f"unknown setting {section}.{key}{_env_hint(name)}",
                              source=f"env {name}")
        values.setdefault(section, {})[key] = value
        sources[f"{section}.{key}"] = f"env {name}"
    return Layer(values, sources)


def _keys(section: str) -> tuple[str, ...]:
    return KEYS[section]


def _env_hint(name: str) -> str:
    known = [f"{ENV_PREFIX}{s.upper()}_{k.upper()}" for s in SECTIONS for k in _keys(s)]
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else \
        f" (UPLOADER_<SECTION>_<KEY>, sections: {', '.join(SECTIONS)})"


def _hint(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _apply_layer(config: Config, layer: Layer, where: dict[str, str]) -> None:
    for section_name, values in layer.values.items():
        section_name = str(section_name)
        section_source = layer.sources.get(section_name, layer.label)
        if section_name not in SECTIONS:
            raise ConfigError(f"unknown section {section_name}{_hint(section_name, SECTIONS)}",
                              source=section_source)
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{section_name} must be a mapping of settings",
                              source=section_source)
        section = getattr(config, section_name)
        hints = typing.get_type_hints(type(section))
        for key, value in values.items():
            full = f"{section_name}.{key}"
            source = layer.sources.get(full, section_source)
            if key not in hints:
                raise ConfigError(f"unknown setting {full}{_hint(str(key), hints)}", source=source)
            try:
                setattr(section, key, coerce(value, hints[key], full))
            except ConfigError as exc:
                exc.source = source
                raise
            if full in layer.sources:
                where[full] = layer.sources[full]
            else:
                where.pop(full, None)


def parse_size(value: Any, key: str) -> int:
    """An int of bytes, or a string in the one size grammar (``"64MiB"``).
    bool is refused: YAML's ``yes`` must not become 1 byte."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return units.parse_size(value)
        except ValueError:
            pass
    raise ConfigError(f"{key} must be a size ({units.SIZE_HELP}), got {value!r}", keys=(key,))


def coerce(value: Any, kind: Any, key: str) -> Any:
    """``value`` (from YAML, or a string from the environment) as ``kind``."""
    if key in SIZE_KEYS:
        return parse_size(value, key)
    if key == "webhooks.endpoints":
        return _endpoints(value, key)
    if typing.get_origin(kind) in (dict, list):
        return _collection(value, kind, key)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{key} must be true or false, got {value!r}", keys=(key,))
    if kind in (int, float):
        try:
            if isinstance(value, bool):
                raise ValueError
            return kind(value)
        except (TypeError, ValueError):
            what = "an integer" if kind is int else "a number"
            raise ConfigError(f"{key} must be {what}, got {value!r}", keys=(key,)) from None
    if kind is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key} must be a string, got {value!r}", keys=(key,))
        return str(value)
    return value


def _collection(value: Any, kind: Any, key: str) -> Any:
    """Mappings and lists from YAML as they are; from an environment variable
    (a string) as ``owner:sha256,owner2:sha256`` or ``a,b``."""
    if typing.get_origin(kind) is dict:
        if isinstance(value, str):
            pairs: dict[str, str] = {}
            for item in filter(None, (p.strip() for p in value.split(","))):
                owner, sep, digest = item.partition(":")
                if not sep:
                    raise ConfigError(f"{key} must look like owner:sha256[,owner2:sha256]",
                                      keys=(key,))
                pairs[owner.strip()] = digest.strip()
            return pairs
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping", keys=(key,))
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be a list", keys=(key,))
    return [str(v) for v in value]


def _endpoints(value: Any, key: str) -> list[WebhookEndpoint]:
    """From YAML a list of mappings; from the environment a JSON list."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            raise ConfigError(f"{key} must be a JSON list of {{url, secret, events}}",
                              keys=(key,)) from None
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be a list of {{url, secret, events}}", keys=(key,))
    endpoints = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if isinstance(item, WebhookEndpoint):
            endpoints.append(item)
            continue
        if not isinstance(item, dict) or set(item) - {"url", "secret", "events", "name"}:
            raise ConfigError(f"{where} must be a mapping of url, secret, events, name",
                              keys=(key,))
        events = item.get("events") or []
        if not isinstance(events, list):
            raise ConfigError(f"{where}.events must be a list of event types", keys=(key,))
        endpoints.append(WebhookEndpoint(url=str(item.get("url") or ""),
                                         secret=str(item.get("secret") or ""),
                                         events=[str(e) for e in events],
                                         name=str(item.get("name") or "")))
    return endpoints
