"""The OpenAPI description matches the server: a schemathesis run against a
live server process (no 5xx, every response matches its schema), plus
checks that every route and error code is described."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from support import ServerProcess
from uploader.app import make_app
from uploader.auth import hash_token
from uploader.config import load_config
from uploader.errors import ERRORS
from uploader.handlers.base import BaseHandler
from uploader.handlers.openapi import SPEC_PATH

TOKEN = "schemathesis-token"
SPEC = json.loads(SPEC_PATH.read_text())
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance")


@pytest.fixture
def live_server(start_server: Callable[..., ServerProcess]) -> Iterator[str]:
    """A real server process with auth on; its log shows no traceback at the end."""
    server = start_server({
        # Small files: hundreds of generated inits must not reserve more
        # than the disk has (that 507 is right, but it is not the point).
        "limits.max_file_size": "64MiB",
        "auth.enabled": True,
        "auth.tokens": f"alice:{hash_token(TOKEN)}"})
    yield server.url
    server.stop()
    assert "Traceback" not in server.logs(), server.logs()[-5000:]


def test_schemathesis_against_a_live_server(live_server: str, tmp_path: Path):
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert exe, "schemathesis is in the test extra of setup.py"
    proc = subprocess.run(
        [exe, "run", f"{live_server}/openapi.json", "-H", f"Authorization: Bearer {TOKEN}",
         "--checks", CHECKS, "--max-examples", "15", "--seed", "20261125",
         "--no-color", "--generation-database", "none", "--request-timeout", "20"],
        cwd=tmp_path, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    assert "passed" in proc.stdout


def test_every_route_is_described(tmp_path: Path):
    config = load_config(None, env={}, overrides={"storage": {"data_dir": str(tmp_path)}})
    app = make_app(config)
    described = {re.sub(r"\{[a-z_]+\}", "ID", p) for p in SPEC["paths"]}
    routes = set()
    for rule in app.default_router.rules[0].target.rules:
        if not issubclass(rule.target, BaseHandler):
            continue  # static files (StaticFileHandler), not the API
        pattern = rule.matcher.regex.pattern.rstrip("$")
        pattern = re.sub(r"\(\[0-9a-f\]\{32\}\)", "ID", pattern)
        routes.add(re.sub(r"\(\\d\{1,9\}\)", "ID", pattern))
    assert routes == described
    app.runtime.executor.shutdown()


def test_every_error_code_is_described():
    enum = SPEC["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
    assert sorted(enum) == sorted(ERRORS)


async def test_the_server_serves_the_file(http_server_client):
    resp = await http_server_client.fetch("/openapi.json")
    assert json.loads(resp.body) == SPEC
    assert SPEC["openapi"].startswith("3.")
