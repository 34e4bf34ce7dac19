"""UploadClient against a real server process (see conftest.server)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import pytest

from support import MiB, file_md5, write_random
from uploader.client import UploadClient, UploadClientError

from .proxy import ChunkProxy


class IdBox:
    """An in-memory ResumeState."""

    def __init__(self, upload_id: str | None = None) -> None:
        self.upload_id, self.saved, self.cleared = upload_id, [], False

    def load(self) -> str | None:
        return self.upload_id

    def save(self, upload_id: str) -> None:
        self.upload_id = upload_id
        self.saved.append(upload_id)

    def clear(self) -> None:
        self.cleared = True


def test_upload_20mib_in_parallel_then_download(
        make_client: Callable[..., UploadClient], server: str, tmp_path: Path) -> None:
    src = tmp_path / "random.bin"
    md5 = write_random(src, 20 * MiB + 12345)  # a short last chunk too
    seen: list[tuple[int, int]] = []
    client = make_client(server, parallel=4, chunk_size=MiB)
    upload = client.upload(src, progress=lambda s, t: seen.append((s, t)))

    assert upload["status"] == "completed"
    assert (upload["md5"], upload["total_chunks"], upload["size"]) == (md5, 21, src.stat().st_size)
    assert upload["location"] == f"/files/{upload['upload_id']}"
    assert client.status(upload["upload_id"])["received"] == list(range(21))
    sent = [s for s, _ in seen]
    assert sent == sorted(sent) and sent[0] == 0 and sent[-1] == src.stat().st_size

    dest = tmp_path / "back" / "copy.bin"
    dest.parent.mkdir()
    assert client.download(upload["upload_id"], dest) == str(dest)
    assert file_md5(dest) == md5
    assert [p.name for p in dest.parent.iterdir()] == ["copy.bin"]  # temp file renamed


def test_dropped_chunk_connections_are_retried(
        make_client: Callable[..., UploadClient], server: str, tmp_path: Path, make_proxy: Callable[..., ChunkProxy]) -> None:
    proxy = make_proxy(drop_puts=5)
    src = tmp_path / "f.bin"
    md5 = write_random(src, 6 * MiB)
    client = make_client(proxy.url, parallel=2, chunk_size=MiB, backoff=0.01)
    upload = client.upload(src)
    assert (upload["status"], upload["md5"]) == ("completed", md5)
    assert len(proxy.puts("dropped")) == 5
    assert sorted(p.chunk_index for p in proxy.puts()) == list(range(6))


def test_client_errors_are_not_retried(
        make_client: Callable[..., UploadClient], server: str, tmp_path: Path, make_proxy: Callable[..., ChunkProxy]) -> None:
    proxy = make_proxy()
    src = tmp_path / "f.bin"
    write_random(src, 100_000)
    client = make_client(proxy.url, chunk_size=1024, backoff=0.01)  # below the 64 KiB minimum
    with pytest.raises(UploadClientError) as info:
        client.upload(src)
    assert (info.value.code, info.value.status) == ("invalid_request", 400)
    assert info.value.message
    assert [(e.method, e.outcome) for e in proxy.log] == [("POST", "400")]


def test_a_refused_chunk_is_an_answer_and_costs_no_body(
        make_client: Callable[..., UploadClient], server: str, tmp_path: Path,
        make_proxy: Callable[..., ChunkProxy]) -> None:
    """Issue 13.5: a chunk refused from its headers (here 404: the upload was
    deleted meanwhile) used to reach the client as a connection reset, retried
    as a network error. The client sends Expect: 100-continue, so the refusal
    comes before the body, which is never sent."""
    proxy = make_proxy()
    src = tmp_path / "f.bin"
    write_random(src, 2 * 16 * MiB)
    client = make_client(proxy.url, parallel=1, chunk_size=16 * MiB, backoff=0.01)
    deleted: list[str] = []

    def delete_after_first_chunk(sent: int, total: int) -> None:
        if sent and not deleted:
            [entry] = proxy.puts()
            upload_id = entry.path.split("/")[2]
            make_client(server).delete(upload_id)
            deleted.append(upload_id)

    with pytest.raises(UploadClientError) as info:
        client.upload(src, progress=delete_after_first_chunk)
    assert (info.value.code, info.value.status) == ("not_found", 404)
    # The accepted chunk carried its 16 MiB, the refused one nothing, and it
    # was asked once: a 404 is not retried.
    assert [(e.chunk_index, e.outcome, e.body) for e in proxy.puts(None)] == \
        [(0, "200", 16 * MiB), (1, "404", 0)]


def test_resume_sends_only_missing_chunks(
        make_client: Callable[..., UploadClient], server: str, tmp_path: Path, make_proxy: Callable[..., ChunkProxy]) -> None:
    src = tmp_path / "f.bin"
    md5 = write_random(src, 5 * MiB)
    client = make_client(server, chunk_size=MiB)
    # Start an upload by hand and send chunks 0 and 3 only.
    _, first = client._json("POST", "/upload/init", {"filename": "f.bin", "size": 5 * MiB,
                                                     "chunk_size": MiB}, ok=(201,))
    data = src.read_bytes()
    for i in (0, 3):
        body = data[i * MiB:(i + 1) * MiB]
        status, resp = client._once("PUT", f"/upload/{first['upload_id']}/chunk?index={i}",
                                    body, {"Content-Length": str(len(body))})
        assert (status, resp.read() and True) == (200, True)

    proxy = make_proxy()
    state = IdBox(first["upload_id"])
    upload = make_client(proxy.url, chunk_size=MiB).upload(src, resume_state=state)
    assert (upload["upload_id"], upload["md5"], state.cleared) == (first["upload_id"], md5, True)
    assert sorted(p.chunk_index for p in proxy.puts(None)) == [1, 2, 4]


def test_unknown_or_aborted_upload_starts_afresh(
        make_client: Callable[..., UploadClient], server: str, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    md5 = write_random(src, 300_000)
    client = make_client(server, chunk_size=64 * 1024)
    state = IdBox("0" * 32)  # never existed
    first = client.upload(src, resume_state=state)
    assert first["upload_id"] != "0" * 32 and state.saved == [first["upload_id"]]

    _, other = client._json("POST", "/upload/init", {"filename": "f.bin", "size": 300_000,
                                                     "chunk_size": 64 * 1024}, ok=(201,))
    client.delete(other["upload_id"])
    with pytest.raises(UploadClientError) as info:
        client.status(other["upload_id"])
    assert (info.value.code, info.value.status) == ("not_found", 404)
    second = client.upload(src, resume_state=IdBox(other["upload_id"]))
    assert second["upload_id"] not in (other["upload_id"], first["upload_id"])
    assert second["md5"] == md5


def test_resuming_a_completed_upload_sends_nothing(
        make_client: Callable[..., UploadClient], server: str, tmp_path: Path, make_proxy: Callable[..., ChunkProxy]) -> None:
    src = tmp_path / "f.bin"
    write_random(src, 200_000)
    done = make_client(server, chunk_size=64 * 1024).upload(src)
    proxy = make_proxy()
    again = make_client(proxy.url).upload(src, resume_state=done["upload_id"])
    assert again["upload_id"] == done["upload_id"]
    assert [e.method for e in proxy.log] == ["GET"]  # one status call, no init, no PUT


def test_empty_file(
        make_client: Callable[..., UploadClient], server: str, tmp_path: Path) -> None:
    src = tmp_path / "empty"
    src.write_bytes(b"")
    client = make_client(server)
    upload = client.upload(src)
    assert (upload["status"], upload["total_chunks"]) == ("completed", 0)
    assert upload["md5"] == hashlib.md5(b"").hexdigest()
    client.download(upload["upload_id"], tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b""


def test_list_and_delete(
        make_client: Callable[..., UploadClient], server: str, tmp_path: Path) -> None:
    src = tmp_path / "listed-file.bin"
    write_random(src, 100_000)
    client = make_client(server)
    upload = client.upload(src)
    found = client.list(status="completed", filename="listed-file.bin")
    assert upload["upload_id"] in [u["upload_id"] for u in found]
    client.delete(upload["upload_id"])
    assert upload["upload_id"] not in [u["upload_id"] for u in client.list()]
    with pytest.raises(UploadClientError) as info:
        client.download(upload["upload_id"], tmp_path / "gone")
    assert info.value.code == "not_found"


def test_client_is_usable_after_close(
        make_client: Callable[..., UploadClient], server: str, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    md5 = write_random(src, 3 * MiB)
    client = make_client(server, chunk_size=MiB)
    assert client.upload(src)["md5"] == md5
    client.close()
    client.close()  # idempotent
    again = client.upload(src)  # new pool, new connections, closed again at teardown
    assert again["md5"] == md5
