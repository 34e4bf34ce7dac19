"""The client and the CLI page through GET /uploads (issue 21.3): `list()`
and `uploader list` return every upload over several pages, newest first;
`list_page` gives one page and its cursor; `--limit` stops early."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

import pytest

from uploader.client import UploadClient, UploadClientError

CLI = [sys.executable, "-m", "uploader"]


def init(server: str, filename: str) -> str:
    request = urllib.request.Request(
        server + "/upload/init", method="POST",
        data=json.dumps({"filename": filename, "size": 10, "chunk_size": 1 << 20}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return str(json.load(answer)["upload_id"])


@pytest.fixture
def seven(server: str) -> tuple[str, list[str]]:
    """Seven uploads of a filename of this test alone (the server is shared
    by the module), newest first."""
    name = f"paged-{uuid.uuid4().hex}.bin"
    return name, [init(server, name) for _ in range(7)][::-1]


def test_list_iterates_every_page_and_list_page_gives_one(
        make_client: Callable[..., UploadClient], server: str,
        seven: tuple[str, list[str]]) -> None:
    name, ids = seven
    client = make_client(server)
    assert [u["upload_id"] for u in client.list(filename=name, page_size=2)] == ids
    assert [u["upload_id"] for u in client.list(filename=name)] == ids  # one 1000-page
    assert [u["upload_id"] for u in client.list(filename=name, limit=3, page_size=2)] == ids[:3]
    first, cursor = client.list_page(filename=name, limit=4)
    assert [u["upload_id"] for u in first] == ids[:4] and cursor
    rest, last = client.list_page(filename=name, limit=4, cursor=cursor)
    assert [u["upload_id"] for u in rest] == ids[4:] and last is None
    with pytest.raises(UploadClientError) as info:
        client.list_page(filename=name, cursor="not-a-cursor")
    assert info.value.code == "invalid_request"


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + list(args), cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin",
                                            "UPLOADER_CLIENT_STATE": str(tmp_path / "s.json")})


def test_cli_list_prints_every_page_and_stops_at_limit(
        server: str, seven: tuple[str, list[str]], tmp_path: Path) -> None:
    name, ids = seven
    listed = run(tmp_path, "list", "--url", server, "--filename", name, "--page-size", "3")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.startswith("ID") and [r.split()[0] for r in rows] == ids
    as_json = run(tmp_path, "list", "--url", server, "--filename", name, "--json",
                  "--page-size", "2", "--limit", "5")
    assert as_json.returncode == 0, as_json.stderr
    assert [json.loads(line)["upload_id"] for line in as_json.stdout.splitlines()] == ids[:5]
    bad = run(tmp_path, "list", "--url", server, "--page-size", "1001")
    assert bad.returncode == 2 and "--page-size" in bad.stderr
