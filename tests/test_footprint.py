"""What a default server (SQLite, local disk, in-process locks, no events
sink, no webhooks) loads: no client library of a backend it does not use.
Each costs resident memory in every process (the Redis client alone ~7 MB,
bench/README.md, peak RSS)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNUSED = ["redis", "standardwebhooks", "aiomysql", "pymysql", "boto3", "botocore", "etcd3"]

SCRIPT = """
import asyncio, json, sys
from uploader.app import make_app
from uploader.config import load_config

async def main():
    config = load_config(None, env={}, overrides={
        "storage": {"data_dir": sys.argv[1]}, "expiry": {"enabled": False}})
    app = make_app(config)
    await app.runtime.start()
    try:
        print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
    finally:
        await app.runtime.stop()

asyncio.run(main())
"""


def loaded_by_a_default_server(data_dir: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(data_dir)], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_default_server_loads_no_client_of_an_unused_backend(tmp_path: Path) -> None:
    loaded = loaded_by_a_default_server(tmp_path / "data")
    assert "uploader" in loaded and "tornado" in loaded and "aiosqlite" in loaded
    assert loaded.isdisjoint(UNUSED), sorted(loaded & set(UNUSED))
