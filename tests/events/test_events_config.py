"""Settings of events, webhooks and hooks: parsed from YAML or the
environment, refused with the exact key when wrong."""

from __future__ import annotations

import base64

import pytest

from uploader.config import ConfigError, load_config

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def test_endpoints_from_the_environment_as_json():
    config = load_config(None, env={
        "UPLOADER_WEBHOOKS_ENDPOINTS":
            f'[{{"url": "https://app.example.com:8443/h", "secret": "{SECRET}", '
            f'"events": ["upload.completed"]}}]'})
    [endpoint] = config.webhooks.endpoints
    assert endpoint.name == "app.example.com_8443"  # the host, when no name is given
    assert endpoint.sink == "webhook:app.example.com_8443"
    assert endpoint.wants("upload.completed") and not endpoint.wants("upload.created")


@pytest.mark.parametrize("endpoints, message", [
    ([{"url": "ftp://x/h", "secret": SECRET}], "webhooks.endpoints[0].url"),
    ([{"url": "http://x/h", "secret": "whsec_c2hvcnQ="}], "webhooks.endpoints[0].secret"),
    ([{"url": "http://x/h", "secret": SECRET, "events": ["upload.done"]}],
     "webhooks.endpoints[0].events"),
    ([{"url": "http://x/h", "secret": SECRET, "name": "a"},
      {"url": "http://y/h", "secret": SECRET, "name": "a"}], "webhooks.endpoints[1].name"),
    ([{"url": "http://x/h", "secret": SECRET, "extra": 1}], "webhooks.endpoints[0] must be"),
    ("not json", "webhooks.endpoints must be a JSON list"),
])
def test_bad_endpoints_name_the_key(endpoints, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, env={}, overrides={"webhooks": {"endpoints": endpoints}})


@pytest.mark.parametrize("section, values, message", [
    ("hooks", {"pre_create_url": "not a url"}, "hooks.pre_create_url"),
    ("hooks", {"timeout": 0}, "hooks.timeout"),
    ("events", {"redis_url": "http://x"}, "events.redis_url"),
    ("events", {"claim_ttl": 0}, "events.claim_ttl"),
    ("webhooks", {"backoff_max": 0.5, "backoff_base": 1}, "webhooks.backoff_max"),
])
def test_bad_settings_name_the_key(section, values, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, env={}, overrides={section: values})
