"""Paths and files: only server ids reach storage, hostile filenames stay
inside data_dir, modes are 0700/0600, downloads are attachments."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from support import KiB, Api, md5

from .helpers import raw_request

CS = 64 * KiB
CANARY = b"canary: must never change\n"


@pytest.fixture
def canary(tmp_path: Path, data_dir: Path) -> Path:
    # tmp_path/canary sits beside data_dir (tmp_path/data): "../canary" from
    # data_dir, "../../canary" from data_dir/store or data_dir/tmp.
    path = tmp_path / "canary"
    path.write_bytes(CANARY)
    return path


def snapshot(root: Path, skip: Path) -> dict[str, bytes]:
    """Every file under root outside ``skip`` (data_dir), with its bytes."""
    out = {}
    for dirpath, _, names in os.walk(root):
        if Path(dirpath).is_relative_to(skip):
            continue
        for name in names:
            p = Path(dirpath) / name
            out[str(p)] = p.read_bytes()
    return out


TRAVERSAL_IDS = [
    "..", "%2e%2e", "%2E%2E", "..%2f..%2fcanary", "%2e%2e%2f%2e%2e%2fcanary",
    "..%5c..%5ccanary", "%252e%252e%252fcanary", "a" * 31, "a" * 33, "A" * 32,
    "0123456789ABCDEF0123456789abcdef", "g" * 32, "%00" + "a" * 29, "a" * 32 + "%2f..",
    "a" * 32 + "%00", "..%2f" + "a" * 32,
]


@pytest.mark.parametrize("bad_id", TRAVERSAL_IDS)
async def test_traversal_ids_are_404_everywhere(api: Api, http_server_port, tmp_path: Path,
                                               data_dir: Path, canary: Path, bad_id: str):
    await api.init(1, CS)  # data_dir exists with something in it
    before = snapshot(tmp_path, data_dir)
    port = http_server_port[1]
    requests = [
        ("GET", f"/upload/{bad_id}/status", b""),
        ("PUT", f"/upload/{bad_id}/chunk?index=0", b"x"),
        ("POST", f"/upload/{bad_id}/complete", b""),
        ("DELETE", f"/upload/{bad_id}", b""),
        ("GET", f"/files/{bad_id}", b""),
        ("GET", f"/files/../{bad_id}", b""),
        ("GET", f"/files/{bad_id}/../../canary", b""),
    ]
    for method, path, body in requests:
        # Raw bytes on the wire: a client library might normalise the path.
        status, head = await raw_request(
            port, f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                  f"Connection: close\r\n\r\n", body)
        assert status in (400, 404), (method, path, head)
        assert CANARY not in head
    assert canary.read_bytes() == CANARY
    assert snapshot(tmp_path, data_dir) == before


HOSTILE_NAMES = {
    "../../canary": "canary",
    "..\\..\\canary": "canary",
    "/etc/passwd": "passwd",
    "a\r\nSet-Cookie: x=1": "a__Set-Cookie: x=1",
    "nul\x00byte": "nul_byte",
    "..": "file",
    ". .hidden": "hidden",
    "ü" * 150: "ü" * 100,  # 300 UTF-8 bytes cut to 200, on a character boundary
    "x" * 300: "x" * 200,
    "\ud800lone": "?lone",
    "dir/": "file",
}


async def test_hostile_filenames_stay_inside_data_dir(api: Api, tmp_path: Path, data_dir: Path,
                                                     canary: Path):
    before = snapshot(tmp_path, data_dir)
    for name, safe in HOSTILE_NAMES.items():
        data = name.encode("utf-8", "replace")[:50] or b"x"
        up = await api.init(len(data), CS, filename=name)
        assert up["filename"] == safe, name
        code, doc = await api.put_chunk(up["upload_id"], 0, data)
        assert code == 200, doc
        code, done = await api.complete(up["upload_id"], md5(data))
        assert code == 200, done
        [stored] = list((data_dir / "store").glob(f"{up['upload_id']}_*"))
        assert stored.resolve().parent == (data_dir / "store").resolve()
        assert stored.name == f"{up['upload_id']}_{safe}"
        assert len(stored.name.encode()) <= 33 + 200
        resp = await api.call("GET", done["location"])
        assert resp.code == 200 and resp.body == data
        disposition = resp.headers["Content-Disposition"]
        assert disposition.startswith("attachment;")
        assert "\r" not in disposition and "\n" not in disposition
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Content-Type"] == "application/octet-stream"
    assert canary.read_bytes() == CANARY
    assert snapshot(tmp_path, data_dir) == before


@pytest.mark.parametrize("name", ["", "   ", None, 7, ["a"]])
async def test_empty_or_non_string_filename_is_400(api: Api, name):
    code, doc = await api.json("POST", "/upload/init", {"filename": name, "size": 1})
    assert code == 400 and doc["error"]["code"] == "invalid_request"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_folders_0700_files_0600(api: Api, data_dir: Path, runtime):
    data = os.urandom(CS + 10)
    up = await api.init(len(data), CS)
    uid = up["upload_id"]
    code, _ = await api.put_chunk(uid, 0, data[:CS])
    assert code == 200
    chunk_dir = data_dir / "tmp" / uid
    assert mode(chunk_dir) == 0o700
    assert mode(chunk_dir / "data") == 0o600 and mode(chunk_dir / "claims") == 0o600
    code, _ = await api.put_chunk(uid, 1, data[CS:])
    code, done = await api.complete(uid)
    assert code == 200
    for d in (data_dir, data_dir / "tmp", data_dir / "store"):
        assert mode(d) == 0o700, d
    [stored] = list((data_dir / "store").glob(f"{uid}_*"))
    assert mode(stored) == 0o600
    db_files = list(data_dir.glob("uploader.db*"))
    assert {p.name for p in db_files} >= {"uploader.db", "uploader.db-wal"}
    for p in db_files:
        assert mode(p) == 0o600, p


async def test_page_has_a_content_security_policy(api: Api):
    resp = await api.call("GET", "/")
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "'wasm-unsafe-eval'" in csp
    assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_api_answers_are_not_sniffable(api: Api):
    for path in ("/uploads", "/upload/" + "0" * 32 + "/status", "/nope"):
        resp = await api.call("GET", path)
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Content-Type"].startswith("application/json")
