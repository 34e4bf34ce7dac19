"""What the multi-instance tests share: a cluster of server processes on one
database, Redis prefix and data_dir, and the ways to look behind its back."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

import pymysql

from support import ServerProcess, run_uploader, server_env, wait_until
from support.server import STOP_TIMEOUT, spawn
from uploader.store.mysql import parse_dsn

REDIS_URL = os.environ.get("TEST_UPLOADER_E2E_REDIS_URL", "redis://127.0.0.1:6379/13")


class Cluster:
    """Starts instances on one database / Redis prefix / data_dir."""

    def __init__(self, tmp: Path, dsn: str, redis_prefix: str) -> None:
        self.tmp, self.dsn, self.redis_prefix = tmp, dsn, redis_prefix
        self.data_dir = tmp / "data"
        self.instances: list[ServerProcess] = []
        self.workers: list[WorkerProcess] = []

    def settings(self, extra: Mapping[str, object] | None = None) -> dict[str, object]:
        """What every instance shares, then ``extra``."""
        return {
            "store.backend": "mysql",
            "store.mysql_dsn": self.dsn,
            "store.pool_size": 4,
            "locks.backend": "redis",
            "locks.redis_url": REDIS_URL,
            "locks.redis_prefix": self.redis_prefix,
            "storage.data_dir": str(self.data_dir),
            "limits.chunk_size_min": "4KiB",
            **(extra or {}),
        }

    def start(self, count: int, settings: Mapping[str, object] | None = None
              ) -> list[ServerProcess]:
        """Start ``count`` processes at once (they migrate a fresh schema
        concurrently), then wait for each to answer /healthz. Instance N logs
        to ``tmp/instanceN.log``."""
        started = []
        for _ in range(count):
            instance = ServerProcess(self.tmp, self.settings(settings),
                                     name=f"instance{len(self.instances) + 1}")
            self.instances.append(instance)
            started.append(instance.start(wait=False))
        for instance in started:
            instance.wait_ready()
        return started

    def start_worker(self, settings: Mapping[str, object] | None = None) -> WorkerProcess:
        """An ``uploader worker`` with the cluster's settings, once it takes jobs."""
        worker = WorkerProcess(self.tmp, self.settings(settings),
                               name=f"worker{len(self.workers) + 1}")
        self.workers.append(worker)
        return worker.start()

    def run(self, *args: str, settings: Mapping[str, object] | None = None
            ) -> subprocess.CompletedProcess[str]:
        """``uploader <args>`` (e.g. ``cleanup``) run to its end with the cluster's settings."""
        return run_uploader(*args, cwd=self.tmp, settings=self.settings(settings))

    def stop_all(self) -> None:
        for instance in self.instances:  # all at once: SIGTERM first, then wait
            if instance.running:
                instance.resume()  # a paused process cannot act on SIGTERM
                instance.terminate()
        for instance in self.instances:
            instance.close()
        for worker in self.workers:
            worker.stop()

    # -- looking behind the servers' backs -----------------------------------

    def sql(self, statement: str, params: tuple = ()) -> list[tuple]:
        p = parse_dsn(self.dsn)
        with pymysql.connect(host=p["host"], port=p["port"], user=p["user"],
                             password=p["password"], database=p["db"], autocommit=True,
                             connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall())

    def merge_version(self, upload_id: str) -> int:
        [(version,)] = self.sql("SELECT merge_version FROM uploads WHERE upload_id = %s",
                                (upload_id,))
        return int(version)

    def stored_file(self, upload_id: str) -> Path:
        [path] = [p for p in (self.data_dir / "store").glob(f"{upload_id}_*")
                  if not p.name.endswith(".part")]
        return path

    def part_files(self) -> list[Path]:
        return list(self.data_dir.rglob("*.part"))


def dsn_via(dsn: str, port: int) -> str:
    """The same database reached through a local port (a TcpProxy)."""
    parts = urlsplit(dsn)
    auth = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{auth}@127.0.0.1:{port}" if auth
                                     else f"127.0.0.1:{port}"))


class WorkerProcess:
    """``python -m uploader worker`` (merges from the queue, no HTTP), started
    like a ServerProcess: a clean environment of ``settings``, the test's
    folder as working folder, a log file, death with the test process."""

    def __init__(self, folder: Path, settings: Mapping[str, object], *, name: str) -> None:
        self.folder, self.settings, self.name = folder, dict(settings), name
        self.log_path = folder / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = spawn([sys.executable, "-m", "uploader", "worker"], cwd=self.folder,
                              env=server_env({"storage.fsync": False, **self.settings}),
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.wait_log("merge queue: taking jobs", timeout=30)
        return self

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def count_log(self, pattern: str) -> int:
        return len(re.findall(pattern, self.logs()))

    def wait_log(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n"
                                     f"{self.logs()[-3000:]}")
            return re.search(pattern, self.logs())
        return wait_until(found, f"{pattern!r} in {self.name}'s log", timeout)

    def kill(self) -> None:
        """SIGKILL: it dies mid-whatever, holding what it held."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time; safe when not running."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
