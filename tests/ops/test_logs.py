"""Access lines: one per request with the upload's fields, JSON when asked,
and no credential (Authorization header, token in a query string) ever."""

from __future__ import annotations

import io
import json
import logging
from typing import Iterator

import pytest

from support import KiB, Api
from uploader.config import LoggingConfig
from uploader.logs import JsonFormatter, TextFormatter, configure_logging, redact

SECRET = "s3cr3t-t0ken-value"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Everything the app logs, formatted as in production with format: json."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield out
    root.removeHandler(handler)
    root.setLevel(old_level)


async def test_json_access_lines_without_secrets(api: Api, json_lines: io.StringIO) -> None:
    auth = {"Authorization": f"Bearer {SECRET}"}
    up = await api.init(100, 64 * KiB)
    upload_id = up["upload_id"]
    code, _ = await api.json("PUT", f"/upload/{upload_id}/chunk?index=0&token={SECRET}",
                             raw=b"x" * 100, headers=auth)
    assert code == 200
    code, _ = await api.json("GET", f"/upload/{'0' * 32}/status?access_token={SECRET}",
                             headers=auth)
    assert code == 404

    text = json_lines.getvalue()
    assert SECRET not in text
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    access = [doc for doc in lines if doc["logger"] == "uploader.access"]
    chunk = next(doc for doc in access if doc["route"] == "/upload/{id}/chunk")
    assert chunk["status"] == 200 and chunk["method"] == "PUT"
    assert (chunk["upload"], chunk["index"], chunk["bytes"]) == (upload_id, 0, 100)
    assert chunk["owner"] == "local" and chunk["duration_ms"] >= 0
    assert "?" not in chunk["path"] and "?" not in chunk["msg"]
    missing = next(doc for doc in access if doc["route"] == "/upload/{id}/status")
    assert (missing["status"], missing["error"]) == (404, "not_found")
    # One access line per request.
    assert len(access) == 3


def test_redact_is_a_safety_net() -> None:
    assert SECRET not in redact(f"GET /files/x?token={SECRET}&a=1")
    assert redact("GET /files/x?a=1&token=abc&b=2") == "GET /files/x?a=1&token=[redacted]&b=2"
    assert SECRET not in redact(f"headers: {{'Authorization': 'Bearer {SECRET}'}}")
    assert SECRET not in redact(f"Authorization: Basic {SECRET}")
    assert redact("index=3 bytes=100") == "index=3 bytes=100"


def test_formatters_redact_messages_from_anywhere() -> None:
    record = logging.LogRecord("tornado.general", logging.WARNING, __file__, 1,
                               "bad request %s", (f"/x?sig={SECRET}",), None)
    assert SECRET not in TextFormatter().format(record)
    assert SECRET not in JsonFormatter().format(record)


def test_configure_logging_installs_one_handler() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    for handler in saved[0]:  # pytest's capture handlers: keep them out of reach
        root.removeHandler(handler)
    try:
        configure_logging(LoggingConfig(format="json", level="warning"))
        assert len(root.handlers) == 1
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert root.level == logging.WARNING
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
