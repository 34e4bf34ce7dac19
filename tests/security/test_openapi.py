"""The OpenAPI description matches the server: a schemathesis run against a
live server process (no 5xx, every response matches its schema), plus
checks that every route and error code is described."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[str]:
    """A real server process with auth on, on a free port, data in tmp_path."""
    port = free_port()
    env = {**os.environ,
           "UPLOADER_SERVER_PORT": str(port),
           "UPLOADER_STORAGE_DATA_DIR": str(tmp_path / "data"),
           "UPLOADER_STORAGE_FSYNC": "false",
           # Small files: hundreds of generated inits must not reserve more
           # than the disk has (that 507 is right, but it is not the point).
           "UPLOADER_LIMITS_MAX_FILE_SIZE": "64MiB",
           "UPLOADER_EXPIRY_ENABLED": "false",
           "UPLOADER_AUTH_ENABLED": "true",
           "UPLOADER_AUTH_TOKENS": f"alice:{hash_token(TOKEN)}"}
    log = (tmp_path / "server.log").open("wb")
    # cwd=tmp_path: no config.yaml there, so only defaults and env apply.
    proc = subprocess.Popen([sys.executable, "-m", "uploader", "serve"], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # bounded poll until the server answers
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("server did not start: "
                            + (tmp_path / "server.log").read_text(errors="replace"))
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    text = (tmp_path / "server.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-5000:]


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
