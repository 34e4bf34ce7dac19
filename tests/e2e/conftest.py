"""Real server processes (``python -m uploader serve``) sharing MariaDB, Redis
and one data_dir, as several instances behind a load balancer would.

Each cluster gets a fresh database, a Redis key prefix of its own (only those
keys are deleted afterwards) and one shared data_dir under the test's tmp
path. Every process started is stopped at teardown, whatever happened (a
SIGSTOPped one is continued first so SIGTERM can reach it; SIGKILL if it does
not exit in time).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pymysql
import pytest
import redis

from store.conftest import mysql_server  # noqa: F401  (fixture: throwaway databases)
from store.conftest import MySQLServer, unreachable
from uploader.store.mysql import parse_dsn

REDIS_URL = os.environ.get("TEST_UPLOADER_E2E_REDIS_URL", "redis://127.0.0.1:6379/13")
START_TIMEOUT = 30.0  # seconds for a process to answer /healthz
STOP_TIMEOUT = 15.0


def _die_with_parent() -> None:
    """Runs in the child before exec: if the test process itself is killed
    (no teardown then), the kernel kills the server too (Linux only)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.02) -> Any:
    """Bounded poll of a condition (never a bare sleep as synchronisation)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while piece := f.read(1 << 22):
            digest.update(piece)
    return digest.hexdigest()


class Instance:
    """One server process and a small blocking JSON client for it."""

    def __init__(self, name: str, port: int, proc: subprocess.Popen, log_path: Path) -> None:
        self.name, self.port, self.proc, self.log_path = name, port, proc, log_path

    def __repr__(self) -> str:
        return f"<{self.name} :{self.port} pid {self.proc.pid}>"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log()))

    def wait_log(self, pattern: str, timeout: float = 60.0) -> re.Match:
        return wait_until(lambda: re.search(pattern, self.log()), timeout,
                          f"{pattern!r} in the log of {self}")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 120.0
                ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, doc: Any = None) -> tuple[int, Any, dict[str, str]]:
        body = b"" if doc is None and method == "POST" else (
            None if doc is None else json.dumps(doc).encode())
        code, headers, raw = self.request(method, path, body,
                                          {"Content-Type": "application/json"})
        return code, (json.loads(raw) if raw else None), headers

    def init(self, size: int, chunk_size: int, **extra: Any) -> dict[str, Any]:
        code, doc, _ = self.json("POST", "/upload/init", {"filename": "big file.bin",
                                                          "size": size,
                                                          "chunk_size": chunk_size, **extra})
        assert code == 201, doc
        return doc

    def put_chunk(self, upload_id: str, index: int, data: bytes) -> tuple[int, Any]:
        code, _, raw = self.request("PUT", f"/upload/{upload_id}/chunk?index={index}", data,
                                    {"Content-Type": "application/octet-stream"})
        return code, json.loads(raw)

    def status(self, upload_id: str) -> dict[str, Any]:
        code, doc, _ = self.json("GET", f"/upload/{upload_id}/status")
        assert code == 200, doc
        return doc

    def complete(self, upload_id: str) -> tuple[int, Any, dict[str, str]]:
        return self.json("POST", f"/upload/{upload_id}/complete")

    def wait_status(self, upload_id: str, wanted: str, timeout: float = 60.0) -> dict[str, Any]:
        return wait_until(lambda: (doc := self.status(upload_id))["status"] == wanted and doc,
                          timeout, f"{upload_id} {wanted} on {self}", interval=0.05)

    def download_md5(self, upload_id: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request("GET", f"/files/{upload_id}")
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            digest = hashlib.md5()
            while piece := resp.read(1 << 20):
                digest.update(piece)
            return digest.hexdigest()
        finally:
            conn.close()


class Cluster:
    """Starts instances on one database / Redis prefix / data_dir."""

    def __init__(self, tmp: Path, dsn: str, redis_prefix: str) -> None:
        self.tmp, self.dsn, self.redis_prefix = tmp, dsn, redis_prefix
        self.data_dir = tmp / "data"
        self.instances: list[Instance] = []

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADER_")}
        env.update({
            "PYTHONUNBUFFERED": "1",
            "UPLOADER_STORE_BACKEND": "mysql",
            "UPLOADER_STORE_MYSQL_DSN": self.dsn,
            "UPLOADER_STORE_POOL_SIZE": "4",
            "UPLOADER_LOCKS_BACKEND": "redis",
            "UPLOADER_LOCKS_REDIS_URL": REDIS_URL,
            "UPLOADER_LOCKS_REDIS_PREFIX": self.redis_prefix,
            "UPLOADER_STORAGE_DATA_DIR": str(self.data_dir),
            "UPLOADER_STORAGE_FSYNC": "false",
            "UPLOADER_LIMITS_CHUNK_SIZE_MIN": "4KiB",
        })
        env.update(overrides)
        return env

    def start(self, count: int, **overrides: str) -> list[Instance]:
        """Start ``count`` processes at once (they migrate a fresh schema
        concurrently), then wait for each to answer /healthz."""
        started = []
        for _ in range(count):
            name = f"instance{len(self.instances) + 1}"
            port = free_port()
            log_path = self.tmp / f"{name}.log"
            with open(log_path, "wb") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "uploader", "serve", "--host", "127.0.0.1",
                     "--port", str(port)],
                    # cwd without a config.yaml: defaults plus the env above.
                    cwd=self.tmp, env=self.env(**overrides), stdout=log_file,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent)
            instance = Instance(name, port, proc, log_path)
            self.instances.append(instance)
            started.append(instance)
        for instance in started:
            wait_until(lambda: self._healthy(instance), START_TIMEOUT, f"{instance} to start")
        return started

    def restart(self, instance: Instance, **overrides: str) -> None:
        """Start a process again on the same port (after a kill)."""
        if instance.proc.poll() is None:
            instance.proc.kill()
            instance.proc.wait(STOP_TIMEOUT)
        with open(instance.log_path, "ab") as log_file:
            instance.proc = subprocess.Popen(
                [sys.executable, "-m", "uploader", "serve", "--host", "127.0.0.1",
                 "--port", str(instance.port)],
                cwd=self.tmp, env=self.env(**overrides), stdout=log_file,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent)
        wait_until(lambda: self._healthy(instance), START_TIMEOUT, f"{instance} to restart")

    @staticmethod
    def _healthy(instance: Instance) -> bool:
        if instance.proc.poll() is not None:
            raise AssertionError(f"{instance} exited with {instance.proc.returncode}:\n"
                                 f"{instance.log()[-3000:]}")
        try:
            return instance.request("GET", "/healthz", timeout=2)[0] == 200
        except OSError:
            return False

    def stop_all(self) -> None:
        for instance in self.instances:
            if instance.proc.poll() is None:
                instance.proc.send_signal(signal.SIGCONT)  # a stopped one cannot act on TERM
                instance.proc.terminate()
        for instance in self.instances:
            try:
                instance.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                instance.proc.kill()
                instance.proc.wait(STOP_TIMEOUT)

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


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        unreachable(f"Redis not reachable at {REDIS_URL}: {exc}")
    yield client
    client.close()


@pytest.fixture
def cluster(tmp_path: Path, mysql_server: MySQLServer,  # noqa: F811
            redis_client: redis.Redis) -> Iterator[Cluster]:
    prefix = f"uploader-e2e:{uuid.uuid4().hex}:"
    group = Cluster(tmp_path, mysql_server.create_database(), prefix)
    try:
        yield group
    finally:
        group.stop_all()
        for key in redis_client.scan_iter(match=prefix + "*"):
            redis_client.delete(key)
