"""A full disk answers 507, leaves no partial file or record, and the upload
resumes once there is room. The data_dir is a small tmpfs mounted by the test
(CI runs as root); the database lives elsewhere so only the bytes run out."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support import KiB, Api, chunks_of, md5, small_tmpfs

CS = 256 * KiB


@pytest.fixture
def data_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    with small_tmpfs(tmp_path / "small", "1m") as mount:
        yield mount


@pytest.fixture
def config_overrides(tmp_path: Path):  # type: ignore[no-untyped-def]
    # No free-space reserve: these tests are about the disk really filling up.
    return {"store": {"sqlite_path": str(tmp_path / "meta" / "uploader.db")},
            "storage": {"min_free_bytes": 0},
            # The merge at complete is what must run out of space here; the
            # incremental merge would already hold a second copy while the
            # chunks arrive (it is the same 2x, spent earlier).
            "merge": {"incremental": False}}


def leftovers(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*.part")]


def resize(mount: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


async def test_chunk_that_does_not_fit_is_507_then_resumes(api: Api, data_dir: Path) -> None:
    data = os.urandom(2 * CS)
    up = await api.init(len(data), CS)
    filler = data_dir / "filler"
    filler.write_bytes(b"\0" * (900 * KiB))
    code, err = await api.put_chunk(up["upload_id"], 0, data[:CS], md5(data[:CS]))
    assert code == 507 and err["error"]["code"] == "insufficient_storage"
    assert leftovers(data_dir) == []
    assert not (data_dir / "tmp" / up["upload_id"] / "chunk_0").exists()
    assert (await api.status(up["upload_id"]))["received"] == []
    filler.unlink()
    for index, part in enumerate(chunks_of(data, CS)):
        code, _ = await api.put_chunk(up["upload_id"], index, part, md5(part))
        assert code == 200
    code, done = await api.complete(up["upload_id"], md5(data))
    assert code == 200 and done["md5"] == md5(data)


async def test_merge_needs_no_room_of_its_own(api: Api, data_dir: Path) -> None:
    """Issue 19: the chunks sit in place in one data file, which complete
    links into store/: a merge on a disk with no room for a second copy
    completes (it used to need one and answered 507)."""
    data = os.urandom(3 * CS)
    resize(data_dir, "2m")
    up = await api.init(len(data), CS)
    for index, part in enumerate(chunks_of(data, CS)):
        code, _ = await api.put_chunk(up["upload_id"], index, part)
        assert code == 200
    resize(data_dir, "1m")
    # 768 KiB of chunks on a 1 MiB disk: a merged copy could not fit.
    code, done = await api.complete(up["upload_id"], md5(data))
    assert code == 200 and done["md5"] == md5(data)
    resp = await api.call("GET", done["location"])
    assert resp.body == data
    assert leftovers(data_dir) == []


async def test_an_upload_that_cannot_fit_twice_is_refused_at_init(api: Api,
                                                                  data_dir: Path) -> None:
    """Its chunks and its merged copy coexist until publish: an upload over
    half the free space was admitted, then ran into 507 part-way (or at its
    merge) and could never complete on that disk. It is refused at init,
    before a byte is sent; one that fits twice goes through."""
    code, err = await api.json("POST", "/upload/init",
                               {"filename": "big.bin", "size": 3 * CS, "chunk_size": CS})
    assert code == 507 and err["error"]["code"] == "insufficient_storage", err
    data = os.urandom(CS + CS // 2)  # 384 KiB: 768 KiB at its peak, on a 1 MiB disk
    up = await api.init(len(data), CS)
    for index, part in enumerate(chunks_of(data, CS)):
        code, _ = await api.put_chunk(up["upload_id"], index, part)
        assert code == 200
    code, done = await api.complete(up["upload_id"], md5(data))
    assert code == 200 and done["md5"] == md5(data)
