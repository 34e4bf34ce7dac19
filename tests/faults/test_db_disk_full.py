"""Issue 13.4: the SQLite database's disk runs full (the data disk has room).
A chunk whose record cannot be written and a DELETE answer 507, nothing is
left half-done (no chunk file in place that no record names), and the
upload carries on once there is room. The database lives on a small tmpfs
mounted by the test, as in test_disk_full.py (CI runs as root)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from support import KiB, Api, chunks_of, md5, small_tmpfs

from uploader.storage.datafile import STORED

CS = 64 * KiB


@pytest.fixture
def db_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    with small_tmpfs(tmp_path / "dbdisk", "2m") as mount:
        yield mount


@pytest.fixture
def config_overrides(db_disk: Path):  # type: ignore[no-untyped-def]
    return {"store": {"sqlite_path": str(db_disk / "uploader.db")},
            # One transaction per change: nothing else writes to the database
            # while the disk is full (no dispatcher pass, no sweep).
            "events": {"enabled": False}}


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; remove the file to give them back.
    SQLite appends each commit to its write-ahead log, which then cannot grow."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * (64 * KiB)
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                if len(block) == 1:
                    break
                block = block[:len(block) // 2]
    finally:
        os.close(fd)
    return filler


def claim_state(data_dir: Path, upload_id: str, index: int) -> bytes:
    """The chunk's claims byte (storage/datafile.py): b"\\x02" marks it stored
    whole, what a merge takes; b"" when the upload has no claims file yet."""
    claims = data_dir / "tmp" / upload_id / "claims"
    return claims.read_bytes()[index:index + 1] if claims.exists() else b""


async def test_chunk_whose_record_cannot_be_written_is_507_then_resumes(
        api: Api, data_dir: Path, db_disk: Path) -> None:
    data = os.urandom(2 * CS)
    up = await api.init(len(data), CS)
    uid = up["upload_id"]
    filler = fill(db_disk)
    code, err = await api.put_chunk(uid, 0, data[:CS], md5(data[:CS]))
    assert code == 507 and err["error"]["code"] == "insufficient_storage", err
    # Not marked whole in the data file, so no merge takes bytes without a record.
    assert claim_state(data_dir, uid, 0) != STORED
    assert not list((data_dir / "tmp" / uid).glob("*.part"))
    status = await api.status(uid)
    assert status["status"] == "in_progress" and status["received"] == []
    filler.unlink()
    for index, part in enumerate(chunks_of(data, CS)):
        code, _ = await api.put_chunk(uid, index, part, md5(part))
        assert code == 200
    code, done = await api.complete(uid, md5(data))
    assert code == 200 and done["md5"] == md5(data)


async def test_delete_on_a_full_database_disk_is_507_then_works(
        api: Api, data_dir: Path, db_disk: Path) -> None:
    data = os.urandom(CS)
    up = await api.init(2 * CS, CS)
    uid = up["upload_id"]
    assert (await api.put_chunk(uid, 0, data))[0] == 200
    filler = fill(db_disk)
    code, err = await api.json("DELETE", f"/upload/{uid}")
    assert code == 507 and err["error"]["code"] == "insufficient_storage", err
    # Nothing done: the upload is as it was, its chunk on disk and recorded.
    status = await api.status(uid)
    assert status["status"] == "in_progress" and status["received"] == [0]
    assert claim_state(data_dir, uid, 0) == STORED
    filler.unlink()
    code, _ = await api.json("DELETE", f"/upload/{uid}")
    assert code == 204
    assert (await api.json("GET", f"/upload/{uid}/status"))[0] == 404
    assert not (data_dir / "tmp" / uid).exists()
