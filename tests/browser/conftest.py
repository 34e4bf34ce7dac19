"""Fixtures for the browser tests: a live server process and headless Chromium.

The server runs as a subprocess because Playwright's sync API refuses to run
inside an event loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from support import REPO_ROOT, ServerProcess, require_service

from .helpers import CHUNK, page_server

ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with page_server(tmp_path_factory.mktemp("server")) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_service("playwright", "not installed (pip install playwright)")
    if not os.path.exists(CHROMIUM):
        require_service("Chromium", f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[ServerProcess], Any]]:
    """Opens the upload page of a server in a fresh context (empty
    localStorage). Any uncaught error in a page fails the test."""
    from playwright.sync_api import expect
    expect.set_options(timeout=60_000)
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(srv: ServerProcess, settings: dict[str, Any] | None = None,
              **context_options: Any) -> Any:
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
        pg.goto(srv.url + "/")
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


def with_settings(pg: Any, srv: ServerProcess, changes: dict[str, Any]) -> None:
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
    pg.route(srv.url + "/", patch)


@pytest.fixture
def page(open_page: Callable[[ServerProcess], Any], server: ServerProcess) -> Any:
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
            require_service("npm", "needed once to install axe-core")
        prefix.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--prefix", str(prefix), f"axe-core@{AXE_VERSION}",
                               "--no-save", "--no-audit", "--no-fund", "--no-package-lock"],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not script.exists():
            require_service("axe-core", f"npm could not install it: {done.stderr[-500:]}")
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
