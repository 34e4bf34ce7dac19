"""The wheel works from anywhere: built from the source tree, installed into
a fresh venv, served from an empty folder, its page loaded in Chromium and
used for an upload. A wheel without the page's files refuses to start.

Offline and quick: the wheel is built with the test venv's setuptools
(--no-build-isolation --no-index), installed --no-deps, and the fresh venv
sees the test venv's dependencies through a .pth line (a plain path, so the
test venv's editable install of uploader is not visible there).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from support import ServerProcess, free_port
from uploader import __version__

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.e2e


def _run(*args: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,  # type: ignore[call-overload]
                          timeout=300, **kw)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy: the build writes build/ and *.egg-info beside the sources.
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "data", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
        "tests", "bench"))
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "--no-index", "-w", tmp / "dist", src)
    assert built.returncode == 0, built.stdout + built.stderr
    [built_wheel] = (tmp / "dist").glob("resumable_uploader-*.whl")
    return built_wheel


def _venv_with(wheel: Path, env_dir: Path) -> Path:
    """A fresh venv holding only the wheel (what a client-only install is)."""
    made = _run(sys.executable, "-m", "venv", "--without-pip", env_dir)
    assert made.returncode == 0, made.stderr
    installed = _run(sys.executable, "-m", "pip", "--python", env_dir / "bin" / "python",
                     "install", "--no-deps", "--no-index", "-q", wheel)
    assert installed.returncode == 0, installed.stderr
    return env_dir


def _purelib(env_dir: Path) -> Path:
    out = _run(env_dir / "bin" / "python", "-c",
               "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, plus the server's dependencies from the test venv."""
    env_dir = _venv_with(wheel, tmp_path_factory.mktemp("venv") / "venv")
    (_purelib(env_dir) / "test-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return env_dir


@pytest.fixture
def served(venv: Path, tmp_path: Path) -> Iterator[str]:
    """`python -m uploader serve` of the installed wheel, in an empty folder."""
    with ServerProcess(tmp_path / "empty", python=venv / "bin" / "python") as server:
        yield server.url


def test_the_installed_package_is_the_wheel(venv: Path, tmp_path: Path) -> None:
    where = _run(venv / "bin" / "python", "-c", "import uploader, uploader.assets as a; "
                 "print(uploader.__file__); print(a.find_assets().static)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    module, static = where.stdout.split()
    assert module.startswith(str(venv)) and static.startswith(str(venv))
    version = _run(venv / "bin" / "uploader", "--version", cwd=tmp_path)
    assert version.stdout.strip() == f"uploader {__version__} (resumable-uploader)"
    typed = _run(venv / "bin" / "python", "-c", "import importlib.resources as r; "
                 "print(r.files('uploader').joinpath('py.typed').is_file())")
    assert typed.stdout.strip() == "True"


def test_the_page_works_from_the_wheel(served: str, tmp_path: Path) -> None:
    with urllib.request.urlopen(served + "/healthz", timeout=10) as resp:
        assert json.loads(resp.read()) == {"status": "ok", "version": __version__}
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    if not os.path.exists(CHROMIUM):
        _missing(f"{CHROMIUM} is missing")
    data = os.urandom(300_000)
    src = tmp_path / "from-the-wheel.bin"
    src.write_bytes(data)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(served + "/")
            # data-ready is set by app.js: the packaged JS modules and CSS loaded.
            expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
            expect(page.locator(".page-footer")).to_contain_text(f"uploader {__version__}")
            assert page.evaluate("getComputedStyle(document.querySelector('#drop-zone'))"
                                 ".borderStyle") != "none"  # style.css applied
            # An upload hashes in the Web Worker with the vendored hash-wasm.
            page.set_input_files("#file-input", str(src))
            card = page.locator(".card", has=page.locator(".file-name",
                                                          has_text="from-the-wheel.bin"))
            expect(card).to_have_attribute("data-state", "done", timeout=60_000)
            upload_id = card.get_attribute("data-upload-id")
            assert not errors, errors
        finally:
            browser.close()
    with urllib.request.urlopen(f"{served}/files/{upload_id}", timeout=30) as resp:
        assert hashlib.md5(resp.read()).hexdigest() == hashlib.md5(data).hexdigest()


def test_a_wheel_without_its_page_refuses_to_start(venv: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(venv, broken, symlinks=True)
    (_purelib(broken) / "uploader" / "templates" / "index.html").unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADER_")}
    proc = _run(broken / "bin" / "python", "-m", "uploader", "serve", "--port", str(free_port()),
                cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("uploader: the page's files are missing (templates/index.html under ")
    assert "Traceback" not in proc.stderr


def test_the_client_alone_needs_no_dependency(wheel: Path, served: str, tmp_path: Path) -> None:
    """The base install is the client: standard library only (tqdm, the
    client extra, only draws a nicer bar). The server commands say what to
    install instead of failing with an ImportError."""
    env_dir = _venv_with(wheel, tmp_path / "client-only")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADER_")}
    env["UPLOADER_CLIENT_STATE"] = str(tmp_path / "state.json")
    src = tmp_path / "from-the-client.bin"
    src.write_bytes(os.urandom(100_000))
    up = _run(env_dir / "bin" / "uploader", "upload", src, "--url", served, "-q", "--json",
              env=env, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["md5"] == hashlib.md5(src.read_bytes()).hexdigest()
    serve = _run(env_dir / "bin" / "uploader", "serve", env=env, cwd=tmp_path)
    assert serve.returncode == 2
    assert serve.stderr.strip().startswith("uploader: serve needs the server's packages (")
    assert serve.stderr.strip().endswith("pip install 'resumable-uploader[server]'")


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: this test must run)")
    pytest.skip(reason)
