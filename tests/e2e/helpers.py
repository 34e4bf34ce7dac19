"""What the multi-instance tests share: a cluster of server processes on one
database, lock service (Redis, the database itself, or etcd, each under a
prefix of the cluster's own) and data_dir, and the ways to look behind its
back."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

import pymysql
import redis

from support import ServerProcess, run_uploader, server_env, wait_until
from support.server import STOP_TIMEOUT, spawn
from uploader.locks.etcd import etcd_lock_key
from uploader.locks.etcd_gateway import b64, prefix_end
from uploader.locks.mysql import mysql_lock_name
from uploader.store.dsn import parse_dsn

REDIS_URL = os.environ.get("TEST_UPLOADER_E2E_REDIS_URL", "redis://127.0.0.1:6379/13")
ETCD_URL = os.environ.get("TEST_UPLOADER_ETCD_URL", "http://127.0.0.1:2379")
# The shared lock backends every multi-instance behaviour is proven with.
LOCK_BACKENDS = ("redis", "mysql", "etcd")


class Cluster:
    """Starts instances on one database / lock service / data_dir."""

    def __init__(self, tmp: Path, dsn: str, lock_backend: str = "redis") -> None:
        self.tmp, self.dsn, self.lock_backend = tmp, dsn, lock_backend
        # Keys of this cluster only (Redis, etcd): removed by cleanup().
        self.lock_prefix = (f"uploader-e2e/{uuid.uuid4().hex}/" if lock_backend == "etcd"
                            else f"uploader-e2e:{uuid.uuid4().hex}:")
        self.data_dir = tmp / "data"
        self.instances: list[ServerProcess] = []
        self.workers: list[WorkerProcess] = []

    def lock_settings(self) -> dict[str, object]:
        if self.lock_backend == "redis":
            return {"locks.backend": "redis", "locks.redis_url": REDIS_URL,
                    "locks.redis_prefix": self.lock_prefix}
        if self.lock_backend == "etcd":
            return {"locks.backend": "etcd", "locks.etcd_endpoints": ETCD_URL,
                    "locks.etcd_prefix": self.lock_prefix}
        return {"locks.backend": "mysql"}  # named locks on the metadata database

    def settings(self, extra: Mapping[str, object] | None = None) -> dict[str, object]:
        """What every instance shares, then ``extra``."""
        return {
            "store.backend": "mysql",
            "store.mysql_dsn": self.dsn,
            "store.pool_size": 4,
            **self.lock_settings(),
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

    def lock_held(self, name: str) -> bool:
        """Whether someone holds the lock ``name`` on the lock service."""
        if self.lock_backend == "redis":
            with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as client:
                # <prefix>lock:<name>: uploader/redis_keys.py
                return bool(client.exists(f"{self.lock_prefix}lock:{name}"))
        if self.lock_backend == "mysql":
            key = mysql_lock_name(parse_dsn(self.dsn)["db"], name)
            [(holder,)] = self.sql("SELECT IS_USED_LOCK(%s)", (key,))
            return holder is not None
        start = etcd_lock_key(self.lock_prefix, name) + "/"
        return bool(_etcd(ETCD_URL, "/v3/kv/range", {
            "key": b64(start), "range_end": b64(prefix_end(start)), "count_only": True,
        }).get("count"))

    def cleanup(self) -> None:
        """Remove this cluster's lock keys (MySQL named locks die with their sessions)."""
        if self.lock_backend == "redis":
            with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as client:
                for key in client.scan_iter(match=self.lock_prefix + "*"):
                    client.delete(key)
        elif self.lock_backend == "etcd":
            _etcd(ETCD_URL, "/v3/kv/deleterange", {
                "key": b64(self.lock_prefix), "range_end": b64(prefix_end(self.lock_prefix))})

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


def _etcd(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


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
