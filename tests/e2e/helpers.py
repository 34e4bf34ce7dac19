"""What the multi-instance tests share: a cluster of server processes on one
database, Redis prefix and data_dir, and the ways to look behind its back."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

import pymysql

from support import ServerProcess, run_uploader
from uploader.store.mysql import parse_dsn

REDIS_URL = os.environ.get("TEST_UPLOADER_E2E_REDIS_URL", "redis://127.0.0.1:6379/13")


class Cluster:
    """Starts instances on one database / Redis prefix / data_dir."""

    def __init__(self, tmp: Path, dsn: str, redis_prefix: str) -> None:
        self.tmp, self.dsn, self.redis_prefix = tmp, dsn, redis_prefix
        self.data_dir = tmp / "data"
        self.instances: list[ServerProcess] = []

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
