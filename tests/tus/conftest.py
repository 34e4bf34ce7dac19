"""Real tus clients against real servers: tus-js-client in Node, tuspy, Uppy.

The npm packages are installed by the tests themselves (``npm install`` into
``~/.cache/uploader-tests/npm/<set>``, once per machine; nothing is committed);
without node/npm, or with the registry unreachable, the tests skip, and in CI
that is a failure. The servers are ``python -m uploader serve`` processes that
die with the test process.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from conftest import require_service
from e2e.conftest import file_md5  # noqa: F401  (used by the tests through this module)
from ops.helpers import free_port, wait_until
from ops.server_process import _die_with_parent

HERE = Path(__file__).resolve().parent
UPLOAD_JS = HERE / "js" / "upload.cjs"
CACHE = Path(os.environ.get("UPLOADER_TEST_CACHE", Path.home() / ".cache" / "uploader-tests"))
# Pinned: the versions the issue was reproduced with and the design was read from.
TUS_JS_CLIENT = "tus-js-client@4.3.1"
UPPY = "uppy@6.0.1"
TUS = {"Tus-Resumable": "1.0.0"}
MiB = 1 << 20


def npm_packages(name: str, *packages: str) -> Path:
    """node_modules with ``packages``, installed once into the cache."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        require_service("node and npm", "needed to run tus-js-client and Uppy")
    folder = CACHE / "npm" / name
    stamp = folder / ".installed"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once install once
        if stamp.exists() and stamp.read_text() == " ".join(packages):
            return folder / "node_modules"
        (folder / "package.json").write_text('{"private": true}\n')
        result = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent",
                                 *packages], cwd=folder, capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            require_service("the npm registry", f"npm install {' '.join(packages)} failed: "
                            f"{result.stderr[-2000:]}")
        stamp.write_text(" ".join(packages))
    return folder / "node_modules"


@pytest.fixture(scope="session")
def tus_js_client() -> Path:
    return npm_packages("tus-js-client", TUS_JS_CLIENT)


def make_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            f.write(block)
            left -= len(block)
    return path


class Server:
    """One ``uploader serve`` process; ``kill`` + ``start`` keep port and data."""

    def __init__(self, tmp: Path, **settings: str) -> None:
        self.tmp = tmp
        self.data_dir = tmp / "data"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "server.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADER_")}
        self.env.update({"PYTHONUNBUFFERED": "1",
                         "UPLOADER_STORAGE_DATA_DIR": str(self.data_dir),
                         "UPLOADER_STORAGE_FSYNC": "false",
                         "UPLOADER_EXPIRY_ENABLED": "false"})
        self.env.update({f"UPLOADER_{k.upper()}": v for k, v in settings.items()})
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        with open(self.log_path, "ab") as out:
            # cwd without config.yaml: only defaults and the env apply.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uploader", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port)], cwd=self.tmp, env=self.env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        wait_until(self._healthy, f"the server on {self.port} to answer /healthz")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited: {self.log()[-3000:]}")
        try:
            return self.request("GET", "/healthz")[0] == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: a crash, nothing is flushed or cleaned up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        if path.startswith("http"):
            path = urlsplit(path).path
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, path: str) -> Any:
        status, _, raw = self.request("GET", path)
        assert status == 200, raw
        return json.loads(raw)

    def download_md5(self, location: str) -> str:
        status, _, raw = self.request("GET", location)
        assert status == 200, raw[:300]
        return hashlib.md5(raw).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path).start()
    try:
        yield srv
    finally:
        srv.stop()


class NodeUpload:
    """One run of tests/tus/js/upload.cjs; events are its stdout JSON lines."""

    def __init__(self, modules: Path, **options: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            ["node", str(UPLOAD_JS), str(modules), json.dumps(options)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_die_with_parent)

    def next_event(self, kind: str, timeout: float = 60.0) -> dict[str, Any]:
        """Read events until one of ``kind`` (a bounded wait on the client's own output)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"client exited before {kind!r}: {self.events} "
                                     f"{self.proc.stderr.read() if self.proc.stderr else ''}")
            event = json.loads(line)
            self.events.append(event)
            if event["e"] == kind:
                return event
        raise AssertionError(f"no {kind!r} event in {timeout}s: {self.events}")

    def release(self) -> None:
        """Let a held client go on."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=30)  # reaps it and closes the pipes

    def finish(self, timeout: float = 240.0) -> dict[str, Any]:
        """Run to the end; the outcome event (success or error)."""
        out, err = self.proc.communicate(timeout=timeout)
        for line in out.splitlines():
            self.events.append(json.loads(line))
        outcome = [e for e in self.events if e["e"] in ("success", "error")]
        assert outcome, f"no outcome; stderr: {err[-3000:]}"
        return outcome[-1]

    def responses(self, method: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["e"] == "response" and e["method"] == method]


def run_node(modules: Path, **options: Any) -> NodeUpload:
    return NodeUpload(modules, **options)
