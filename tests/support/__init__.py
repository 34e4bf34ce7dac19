"""What the test suites share (tests/README.md tells how to use it).

Tests import from here (``from support import ServerProcess, wait_until``),
never from a conftest.py: conftest files hold fixtures only.
"""

from __future__ import annotations

from pathlib import Path

from .api import Api, BlockingApi, Response
from .disks import small_tmpfs
from .data import KiB, MiB, chunks_of, file_md5, md5, write_random
from .server import ServerProcess, free_port, run_uploader, server_env
from .services import (MYSQL_DSN, MySQLServer, require_etcd, require_redis, require_service,
                       with_database)
from .tcp_proxy import TcpProxy
from .wait import wait_until, wait_until_async

REPO_ROOT = Path(__file__).resolve().parents[2]

__all__ = [
    "Api", "BlockingApi", "KiB", "MiB", "MYSQL_DSN", "MySQLServer", "REPO_ROOT", "Response",
    "ServerProcess", "chunks_of", "file_md5", "free_port", "md5", "require_etcd", "require_redis",
    "require_service", "run_uploader", "server_env", "small_tmpfs", "TcpProxy", "wait_until",
    "wait_until_async",
    "with_database",
    "write_random",
]
