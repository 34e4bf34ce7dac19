"""Fixtures for the browser tests: a live server process and headless Chromium.

The server runs as a subprocess because Playwright's sync API refuses to run
inside an event loop; it gets its own data directory and 1 MiB chunks so a
30 MiB file makes 30 chunks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHUNK = 1 << 20
IN_CI = os.environ.get("CI") == "true"


def _missing(reason: str) -> None:
    # On a developer machine a missing browser is a skip; in CI it is a broken
    # setup that must not pass silently.
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: browser tests must run)", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `uploader serve` process with its own data directory; stop() and
    start() again keep the port and the data (a restart)."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None):
        self.env = env or {}
        self.data_dir = tmp / "data"
        self.log = tmp / "server.log"
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ,
               "UPLOADER_STORAGE_DATA_DIR": str(self.data_dir),
               "UPLOADER_LIMITS_CHUNK_SIZE_DEFAULT": str(CHUNK),
               "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uploader", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        # Readiness: a bounded poll of /healthz (the process may also die early).
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"server not ready after 30 s:\n{self._log_tail()}")
            time.sleep(0.1)  # polling interval of the readiness loop, not a sync point

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, json.loads(raw) if raw else None

    def status(self, upload_id: str) -> tuple[int, Any]:
        return self.request("GET", f"/upload/{upload_id}/status")

    def download_md5(self, location: str) -> str:
        digest = hashlib.md5()
        with urllib.request.urlopen(self.base + location, timeout=30) as resp:
            while block := resp.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("server"))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright)")
    if not os.path.exists(CHROMIUM):
        _missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[Server], Any]]:
    """Opens the upload page of a server in a fresh context (empty
    localStorage). Any uncaught error in a page fails the test."""
    from playwright.sync_api import expect
    expect.set_options(timeout=60_000)
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(srv: Server, settings: dict[str, Any] | None = None, **context_options: Any) -> Any:
        options = {"viewport": {"width": 1280, "height": 860}, **context_options}
        context = browser.new_context(**options)
        contexts.append(context)
        pg = context.new_page()
        if settings:
            with_settings(pg, srv, settings)
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        # The server sends a strict CSP: an inline script or style="" would be
        # blocked in production, so a violation is a bug even if tests pass.
        pg.on("console", lambda msg: errors.append(msg.text)
              if msg.type == "error" and "Content Security Policy" in msg.text else None)
        pg.goto(srv.base + "/")
        expect(pg.locator("body")).to_have_attribute("data-ready", "true")
        return pg

    try:
        yield open_
    finally:
        for context in contexts:
            context.close()
    assert not errors, f"errors in the page: {errors}"


SETTINGS_JSON = re.compile(r'(<script type="application/json" id="settings">)(.*?)(</script>)',
                           re.S)


def with_settings(pg: Any, srv: Server, changes: dict[str, Any]) -> None:
    """Serves the page with some of its settings changed, as if the server
    had sent them (a stall timeout of one second, say)."""
    def patch(route: Any) -> None:
        resp = route.fetch()
        html = resp.text()
        match = SETTINGS_JSON.search(html)
        assert match, "the page carries no settings"
        settings = {**json.loads(match.group(2)), **changes}
        html = html[:match.start(2)] + json.dumps(settings).replace("<", "\\u003c") \
            + html[match.end(2):]
        route.fulfill(response=resp, body=html)
    pg.route(srv.base + "/", patch)


@pytest.fixture
def page(open_page: Callable[[Server], Any], server: Server) -> Any:
    return open_page(server)


AXE_VERSION = "4.14.1"


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core's released axe.min.js (MPL-2.0, licence in the package),
    installed once from npm into a cache folder outside the repository."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    prefix = cache / "uploader-tests" / f"axe-core-{AXE_VERSION}"
    script = prefix / "node_modules" / "axe-core" / "axe.min.js"
    if not script.exists():
        npm = shutil.which("npm")
        if npm is None:
            _missing("npm is missing (needed once to install axe-core)")
        prefix.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--prefix", str(prefix), f"axe-core@{AXE_VERSION}",
                               "--no-save", "--no-audit", "--no-fund", "--no-package-lock"],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not script.exists():
            _missing(f"npm could not install axe-core: {done.stderr[-500:]}")
    return script.read_text()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@dataclass
class DataFile:
    path: Path
    size: int
    md5: str
    chunk_md5s: list[str]


@pytest.fixture
def make_file(tmp_path: Path):
    """Random bytes generated at run time; returns the MD5s the page must send."""
    def make(name: str, size: int) -> DataFile:
        path = tmp_path / name
        whole = hashlib.md5()
        chunks = []
        with open(path, "wb") as f:
            left = size
            while left > 0:
                block = os.urandom(min(CHUNK, left))
                f.write(block)
                whole.update(block)
                chunks.append(hashlib.md5(block).hexdigest())
                left -= len(block)
        return DataFile(path, size, whole.hexdigest(), chunks)
    return make
