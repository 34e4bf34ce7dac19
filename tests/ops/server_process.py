"""A real ``python -m uploader serve`` process for the shutdown tests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from .helpers import free_port, wait_until


def _die_with_parent() -> None:
    """In the child before exec: if the test process is killed (no teardown),
    the kernel kills the server too (Linux; as tests/e2e does)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ServerProcess:
    """Started on a free port with its own data_dir and JSON logs; always
    killed on exit if it is still running (a test never leaves one behind)."""

    def __init__(self, tmp_path: Path, **settings: str) -> None:
        self.data_dir = tmp_path / "data"
        self.port = free_port()
        self.stderr_path = tmp_path / "server.stderr"
        env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADER_")}
        env.update({"UPLOADER_STORAGE_DATA_DIR": str(self.data_dir),
                    "UPLOADER_STORAGE_FSYNC": "false",
                    "UPLOADER_EXPIRY_ENABLED": "false",
                    "UPLOADER_LOGGING_FORMAT": "json"})
        env.update({f"UPLOADER_{k.upper()}": v for k, v in settings.items()})
        self._stderr = open(self.stderr_path, "wb")
        # cwd: a folder without config.yaml, so only defaults and env apply.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uploader", "serve", "--host", "127.0.0.1",
             "--port", str(self.port)], cwd=tmp_path, env=env,
            stdout=subprocess.DEVNULL, stderr=self._stderr, preexec_fn=_die_with_parent)

    def __enter__(self) -> "ServerProcess":
        wait_until(self._healthy, "the server to answer /healthz")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._stderr.close()

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited: {self.stderr_path.read_text()}")
        try:
            return self.request("GET", "/healthz")[0] == 200
        except OSError:
            return False

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = self.connection()
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def accepts_connections(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
            return True
        except OSError:
            return False

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def exit_code(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)

    def log_lines(self) -> list[dict[str, Any]]:
        """Every stderr line, parsed: each must be one JSON object."""
        return [json.loads(line) for line in self.stderr_path.read_text().splitlines()]

    def part_files(self) -> list[Path]:
        return list((self.data_dir / "tmp").rglob("*.part"))
