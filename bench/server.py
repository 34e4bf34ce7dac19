"""Start the uploader (or the Node peer) as a subprocess and watch its CPU and memory."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .client import Conn

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """Samples VmRSS every ``interval`` seconds (VmHWM would include earlier
    figures of the same process, so the peak of one phase is sampled)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_kib(self.pid))
            await asyncio.sleep(self.interval)

    def __enter__(self) -> "RssSampler":
        self.peak = rss_kib(self.pid)
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, rss_kib(self.pid))


class ServerProcess:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, port: int,
                 health: str, log: Path) -> None:
        self.argv, self.env, self.cwd, self.port, self.health = argv, env, cwd, port, health
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 30.0) -> "ServerProcess":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}: "
                                   + self.log.read_text(errors="replace")[-2000:])
            try:
                conn = await Conn("127.0.0.1", self.port).open()
                status, _ = await conn.request("GET", self.health)
                await conn.close()
                if status < 500:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer within {timeout}s; see {self.log}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def uploader_server(tmp: Path, *, mysql_dsn: str | None, redis_url: str | None,
                    extra_env: dict[str, str], root: Path | None = None) -> ServerProcess:
    """``root``: the checkout whose server runs (default: this one)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADER_")}
    env.update({
        "UPLOADER_STORAGE_DATA_DIR": str(tmp / "data"),
        # 1 KiB chunks for the per-request figures and the 10,000-chunk status.
        "UPLOADER_LIMITS_CHUNK_SIZE_MIN": "1024",
        "UPLOADER_EXPIRY_ENABLED": "false",
        # One load client on one address opens 200 connections: lift the
        # per-address cap and the free-space reserve that guard production.
        "UPLOADER_CONNECTIONS_MAX_PER_ADDRESS": "0",
        "UPLOADER_STORAGE_MIN_FREE_BYTES": "0",
        "PYTHONUNBUFFERED": "1",
    })
    if mysql_dsn:
        env["UPLOADER_STORE_BACKEND"] = "mysql"
        env["UPLOADER_STORE_MYSQL_DSN"] = mysql_dsn
    if redis_url:
        env["UPLOADER_LOCKS_BACKEND"] = "redis"
        env["UPLOADER_LOCKS_REDIS_URL"] = redis_url
    env.update(extra_env)
    root = root or Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    argv = [sys.executable, "-m", "uploader", "serve", "--host", "127.0.0.1",
            "--port", str(port), "--config", str(root / "config.yaml")]
    return ServerProcess(argv, env, tmp, port, "/healthz", tmp / "server.log")
