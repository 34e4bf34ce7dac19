"""Ids and filenames can never reach outside data_dir."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from support import KiB, Api
from uploader.naming import sanitize_filename

CS = 64 * KiB


@pytest.mark.parametrize("upload_id", [
    "..", "%2e%2e", "..%2f..%2fetc", "%2F", "a" * 31, "a" * 33, "A" * 32,
    "g" * 32, "a" * 30 + "%2f", "a" * 32 + "%00",
])
async def test_bad_ids_are_404_on_every_route(api: Api, upload_id: str) -> None:
    for method, path in [("GET", f"/upload/{upload_id}/status"),
                         ("PUT", f"/upload/{upload_id}/chunk?index=0"),
                         ("POST", f"/upload/{upload_id}/complete"),
                         ("DELETE", f"/upload/{upload_id}"),
                         ("GET", f"/files/{upload_id}")]:
        code, doc = await api.json(method, path, raw=b"x" if method in ("PUT", "POST") else None)
        assert code == 404, (method, path, doc)
        assert doc["error"]["code"] == "not_found"


@pytest.mark.parametrize("name, expected", [
    ("../../x", "x"),
    ("..\\..\\win.ini", "win.ini"),
    ("a\r\nSet-Cookie: x", "a__Set-Cookie: x"),
    ("...hidden", "hidden"),
    ("  .. ", "file"),
    ("/", "file"),
    ("nul\x00byte", "nul_byte"),
    ("é" * 150, "é" * 100),
    ("\ud800x", "?x"),
    # Issue 13.10: names read as what they are.
    ("invoice\u202egpj.exe", "invoicegpj.exe"),            # right-to-left override
    ("\u2067\u202bexe.jpg\u202c\u2069", "exe.jpg"),        # isolates and embeddings
    ("a\u200e\u200f\u061cb", "ab"),                        # direction marks
    ("c1\x85\x9b\x9fend", "c1___end"),                      # C1 controls
    ("zero\u200bwidth\u200c\u200d\u2060\ufeff", "zerowidth"),  # zero-width, BOM
    ("\u200b.htaccess", "htaccess"),                        # hidden dot file behind one
    ("line\u2028para\u2029end", "line_para_end"),
    ("soft\u00adhyphen", "softhyphen"),
    ("\u202e", "file"),
])
def test_sanitize_filename(name: str, expected: str) -> None:
    assert sanitize_filename(name) == expected
    assert len(sanitize_filename(name).encode()) <= 200


@pytest.mark.parametrize("hostile", ["../../canary.txt", "..\\..\\canary.txt",
                                     "x\r\ny", "ü" * 150 + ".bin", "../" * 40 + "z"])
async def test_hostile_filename_stays_inside(api: Api, data_dir: Path, tmp_path: Path,
                                             hostile: str) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_bytes(b"precious")
    before = hashlib.sha256(canary.read_bytes()).hexdigest()
    up = await api.init(CS, CS, filename=hostile)
    assert "/" not in up["filename"] and "\\" not in up["filename"]
    assert "\r" not in up["filename"] and "\n" not in up["filename"]
    assert len(up["filename"].encode()) <= 200
    await api.put_chunk(up["upload_id"], 0, b"evil" * (CS // 4))
    code, done = await api.complete(up["upload_id"])
    assert code == 200
    assert hashlib.sha256(canary.read_bytes()).hexdigest() == before
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    outside = [p for p in files if not p.resolve().is_relative_to(data_dir.resolve())]
    assert outside == [canary]
    resp = await api.call("GET", done["location"])
    disposition = resp.headers["Content-Disposition"]
    assert "\r" not in disposition and "\n" not in disposition


async def test_storage_modes(api: Api, data_dir: Path) -> None:
    up = await api.init(CS, CS)
    await api.put_chunk(up["upload_id"], 0, bytes(CS))
    assert oct((data_dir / "tmp" / up["upload_id"]).stat().st_mode & 0o777) == "0o700"
    for name in ("data", "claims"):
        path = data_dir / "tmp" / up["upload_id"] / name
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    await api.complete(up["upload_id"])
    for path in (data_dir, data_dir / "store", data_dir / "tmp"):
        assert path.stat().st_mode & 0o777 == 0o700, path
    for path in (data_dir / "store").iterdir():
        assert path.stat().st_mode & 0o777 == 0o600
    assert (data_dir / "uploader.db").stat().st_mode & 0o777 == 0o600


async def test_stored_name_shows_no_hidden_direction(api: Api) -> None:
    """The upload object and the download name carry the cleaned name
    (issue 13.10): "invoice<RLO>gpj.exe" would show as "invoiceexe.jpg"."""
    up = await api.init(1, CS, filename="invoice\u202egpj.exe")
    assert up["filename"] == "invoicegpj.exe"
    await api.put_chunk(up["upload_id"], 0, b"x")
    code, done = await api.complete(up["upload_id"])
    assert code == 200
    listed = (await api.json("GET", "/uploads?filename=invoicegpj.exe"))[1]["uploads"]
    assert [u["upload_id"] for u in listed] == [up["upload_id"]]
    resp = await api.call("GET", done["location"])
    assert "invoicegpj.exe" in resp.headers["Content-Disposition"]
    assert "%E2%80%AE" not in resp.headers["Content-Disposition"]
