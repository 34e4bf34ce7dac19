"""Uppy 6 (the npm ``uppy`` bundle: Dashboard + Tus plugin) in headless Chromium,
against the tus endpoint (docs/tus.md).

The page is a test fixture served from another origin, so the upload also
exercises CORS for tus (preflights, exposed Location / Upload-Offset).
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from support import MiB, ServerProcess, file_md5, write_random
from support.node import UPPY, npm_packages

HERE = Path(__file__).resolve().parent

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


@pytest.fixture
def page_server(tmp_path: Path) -> Iterator[str]:
    """The fixture page and the Uppy bundle on their own origin."""
    modules = npm_packages("uppy", UPPY)
    root = tmp_path / "site"
    shutil.copytree(HERE / "uppy", root)
    for name in ("uppy.min.js", "uppy.min.css"):
        shutil.copy(modules / "uppy" / "dist" / name, root / name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_uppy_dashboard_uploads_two_files(tmp_path: Path, page_server: str, browser: Any,
                                          start_server: Callable[..., ServerProcess]) -> None:
    from playwright.sync_api import expect
    server = start_server({"cors.allow_origins": page_server})
    files = [tmp_path / "photo one.jpg", tmp_path / "notes.txt"]
    for path, size in zip(files, (3 * MiB + 11, 200_000)):
        write_random(path, size)
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{page_server}/index.html?endpoint={server.url}/files/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.locator("input.uppy-Dashboard-input").first.set_input_files([str(f) for f in files])
    page.locator(".uppy-StatusBar-actionBtn--upload").click()
    expect(page.locator("body")).to_have_attribute("data-result", re.compile(".+"),
                                                    timeout=120_000)
    result = json.loads(page.locator("body").get_attribute("data-result") or "{}")
    page.close()
    assert not errors and result["failed"] == [], (errors, result)
    by_name = {f["name"]: f["url"] for f in result["successful"]}
    assert set(by_name) == {"photo one.jpg", "notes.txt"}
    for f in files:
        uid = by_name[f.name].rstrip("/").rsplit("/", 1)[1]
        status = server.status(uid)
        assert status["filename"] == f.name and status["status"] == "completed"
        assert server.download_md5(f"/files/{uid}") == file_md5(f)
