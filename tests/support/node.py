"""Node.js programs as test clients: npm packages installed by the tests
themselves (once per machine, into ``~/.cache/uploader-tests/npm/<set>``;
nothing is committed), and a driver of the real tus-js-client
(``tests/tus/js/upload.cjs``) whose every answer and event is a JSON line."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from .server import spawn
from .services import require_service

REPO = Path(__file__).resolve().parents[2]
UPLOAD_JS = REPO / "tests" / "tus" / "js" / "upload.cjs"
CACHE = Path(os.environ.get("UPLOADER_TEST_CACHE", Path.home() / ".cache" / "uploader-tests"))
# Pinned: the versions issue 15 was reproduced with and its design was read from.
TUS_JS_CLIENT = "tus-js-client@4.3.1"
UPPY = "uppy@6.0.1"


def npm_packages(name: str, *packages: str) -> Path:
    """node_modules holding ``packages``, installed once into the cache. No
    node/npm, or no registry: a skip locally, a failure in CI."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        require_service("node and npm", "they run tus-js-client and build nothing else")
    assert npm is not None
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


class NodeUpload:
    """One run of upload.cjs (tus-js-client in Node) with ``options``; it
    dies with the test process like every server a test starts."""

    def __init__(self, modules: Path, **options: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.proc = spawn(["node", str(UPLOAD_JS), str(modules), json.dumps(options)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)

    def next_event(self, kind: str, timeout: float = 60.0) -> dict[str, Any]:
        """Read events until one of ``kind`` (a bounded wait on the client's output)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"client exited before {kind!r}: {self.events} {err}")
            event = json.loads(line)
            self.events.append(event)
            if event["e"] == kind:
                return event
        raise AssertionError(f"no {kind!r} event in {timeout}s: {self.events}")

    def release(self) -> None:
        """Let a client held before a PATCH (option ``holdAt``) go on."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=30)  # reaps it and closes the pipes

    def finish(self, timeout: float = 240.0) -> dict[str, Any]:
        """Run to the end; the outcome event (success or error)."""
        out, err = self.proc.communicate(timeout=timeout)
        self.events += [json.loads(line) for line in out.splitlines()]
        outcome = [e for e in self.events if e["e"] in ("success", "error")]
        assert outcome, f"no outcome; stderr: {err[-3000:]}"
        return outcome[-1]

    def responses(self, method: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["e"] == "response" and e["method"] == method]
