"""tuspy 1.1 (``tusclient``), the Python tus client, against a real server."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

import pytest
from tusclient import client as tus_client
from tusclient.storage.filestorage import FileStorage

from support import ServerProcess, file_md5

from .helpers import MiB, get_json, make_file

pytestmark = pytest.mark.e2e


class SharedStream(io.BufferedReader):
    """tuspy closes the stream after fingerprinting it and leaves files it
    opens by path unclosed: hand it a stream that outlives its close()."""

    def close(self) -> None:
        pass

    def really_close(self) -> None:
        super().close()


@pytest.fixture
def stream_of() -> Iterator:
    opened: list[SharedStream] = []

    def open_(path: Path) -> SharedStream:
        opened.append(SharedStream(io.FileIO(path, "rb")))
        return opened[-1]
    yield open_
    for stream in opened:
        stream.really_close()


def test_upload_with_checksums(server: ServerProcess, tmp_path: Path, stream_of) -> None:
    data = make_file(tmp_path / "tuspy.bin", 3 * MiB + 1)
    client = tus_client.TusClient(server.url + "/files/")
    uploader = client.uploader(file_stream=stream_of(data), chunk_size=MiB,
                               upload_checksum=True, metadata={"filename": "tuspy.bin"})
    uploader.upload()
    assert uploader.offset == data.stat().st_size
    uid = uploader.url.rsplit("/", 1)[1]
    status = get_json(server, f"/upload/{uid}/status")
    assert status["status"] == "completed" and status["md5"] == file_md5(data)
    assert status["filename"] == "tuspy.bin"


def test_resume_from_stored_url(server: ServerProcess, tmp_path: Path, stream_of) -> None:
    data = make_file(tmp_path / "resume.bin", 4 * MiB + 3)
    storage = FileStorage(str(tmp_path / "tuspy-urls.json"))
    client = tus_client.TusClient(server.url + "/files/")
    first = client.uploader(file_stream=stream_of(data), chunk_size=MiB // 2, store_url=True,
                            url_storage=storage)
    first.upload(stop_at=MiB + 17)  # an interrupted run
    stopped_at = first.offset
    assert MiB + 17 <= stopped_at < data.stat().st_size

    again = client.uploader(file_stream=stream_of(data), chunk_size=MiB // 2, store_url=True,
                            url_storage=storage)
    assert again.url == first.url and again.offset == stopped_at  # from HEAD
    again.upload()
    storage.close()
    uid = again.url.rsplit("/", 1)[1]
    assert get_json(server, f"/upload/{uid}/status")["md5"] == file_md5(data)
