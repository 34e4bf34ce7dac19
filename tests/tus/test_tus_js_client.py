"""tus-js-client 4.3.1 (Node) against a real server: the way applications use it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from support import ServerProcess, file_md5
from support.node import NodeUpload
from support.s3 import MotoS3

from .helpers import TUS, MiB, get_json, make_file

pytestmark = pytest.mark.e2e


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


def path_of(url: str) -> str:
    return "/files/" + upload_id(url)


def test_plain_upload_lands_as_an_upload_like_any_other(server: ServerProcess, tus_js_client: Path,
                                                        tmp_path: Path) -> None:
    data = make_file(tmp_path / "report 2026.bin", 5 * MiB + 12345)
    client = NodeUpload(tus_js_client, endpoint=server.url + "/files/", file=str(data),
                      metadata={"filename": "../report 2026.bin", "filetype": "app/x"})
    outcome = client.finish()
    assert outcome["e"] == "success", client.events
    uid = upload_id(outcome["url"])
    status = get_json(server, f"/upload/{uid}/status")
    assert status["status"] == "completed"
    assert status["filename"] == "report 2026.bin"  # sanitized from Upload-Metadata
    assert status["md5"] == file_md5(data)
    assert status["size"] == data.stat().st_size
    assert server.download_md5(f"/files/{uid}") == file_md5(data)
    assert [u["upload_id"] for u in get_json(server, "/uploads")["uploads"]] == [uid]
    # One PATCH carried the whole file (chunkSize Infinity), cut into our chunks.
    assert len(client.responses("PATCH")) == 1
    assert status["total_chunks"] >= 1 and status["received"] == list(
        range(status["total_chunks"]))


def test_parallel_uploads_concatenate_into_one_file(server: ServerProcess, tus_js_client: Path,
                                                    tmp_path: Path) -> None:
    data = make_file(tmp_path / "parallel.bin", 9 * MiB + 7)
    uid = upload_in_parallel(server, tus_js_client, data)
    assert [u["upload_id"] for u in get_json(server, "/uploads")["uploads"]] == [uid]


def upload_in_parallel(server: ServerProcess, tus_js_client: Path, data: Path) -> str:
    """tus-js-client with parallelUploads: 4; checks the final upload's file
    and that its four partials were consumed by it. Returns the final's id."""
    client = NodeUpload(tus_js_client, endpoint=server.url + "/files/", file=str(data),
                        parallelUploads=4)
    outcome = client.finish()
    assert outcome["e"] == "success", client.events
    posts = client.responses("POST")
    assert len(posts) == 5 and all(p["status"] == 201 for p in posts)  # 4 partials + final
    uid = upload_id(outcome["url"])
    status = get_json(server, f"/upload/{uid}/status")
    assert status["status"] == "completed" and status["md5"] == file_md5(data)
    assert server.download_md5(f"/files/{uid}") == file_md5(data)
    partial_urls = {p["url"] for p in client.responses("PATCH")}
    assert len(partial_urls) == 4
    for url in partial_urls:
        assert server.call("HEAD", path_of(url), headers=TUS).code == 404
    return uid


@pytest.mark.parametrize("size", [24 * MiB + 7, 9 * MiB + 7], ids=["copied", "short-joined"])
def test_parallel_uploads_on_s3(start_server: Callable[..., ServerProcess], s3_server: MotoS3,
                                s3_bucket: str, tus_js_client: Path, tmp_path: Path,
                                size: int) -> None:
    """Four partials in the bucket, one final built from them inside S3: 6 MiB
    partials are copied part for part; 2.25 MiB ones are read and joined into
    parts of at least 5 MiB (docs/tus.md, "Concatenation")."""
    server = start_server({"storage.backend": "s3", "s3.download": "stream",
                           **{f"s3.{k}": v for k, v in s3_server.config(
                               s3_bucket, prefix="u/").items()}})
    data = make_file(tmp_path / "parallel.bin", size)
    uid = upload_in_parallel(server, tus_js_client, data)
    # Only the final object is left: no partial object, tail or multipart upload.
    assert s3_server.keys(s3_bucket) == [f"u/{uid}_parallel.bin"]
    assert s3_server.open_uploads(s3_bucket) == []
    assert [u["upload_id"] for u in get_json(server, "/uploads")["uploads"]] == [uid]


def test_resume_after_the_client_process_is_killed(server: ServerProcess, tus_js_client: Path,
                                                   tmp_path: Path) -> None:
    data = make_file(tmp_path / "resume.bin", 6 * MiB)
    storage = tmp_path / "tus-urls.json"
    options = dict(endpoint=server.url + "/files/", file=str(data), chunkSize=512 * 1024,
                   urlStorage=str(storage))
    first = NodeUpload(tus_js_client, holdAt=3 * MiB, **options)
    assert first.next_event("hold")["offset"] == 3 * MiB
    first.kill()  # the application dies between two PATCHes

    second = NodeUpload(tus_js_client, **options)
    assert second.next_event("previous")["count"] == 1  # found in the file URL storage
    outcome = second.finish()
    assert outcome["e"] == "success", second.events
    heads = second.responses("HEAD")
    assert heads and heads[0]["offset"] == str(3 * MiB)  # resumed, not restarted
    assert not second.responses("POST")
    uid = upload_id(outcome["url"])
    assert get_json(server, f"/upload/{uid}/status")["md5"] == file_md5(data)


@pytest.mark.parametrize("protocol", ["ietf-draft-03", "ietf-draft-05"])
def test_ietf_draft_protocols(server: ServerProcess, tus_js_client: Path, tmp_path: Path,
                              protocol: str) -> None:
    data = make_file(tmp_path / "draft.bin", 3 * MiB + 5)
    client = NodeUpload(tus_js_client, endpoint=server.url + "/files/", file=str(data),
                      protocol=protocol, chunkSize=1 * MiB)
    outcome = client.finish()
    assert outcome["e"] == "success", client.events
    patches = client.responses("PATCH")
    assert [p["offset"] for p in patches] == [str(n) for n in
                                              (MiB, 2 * MiB, 3 * MiB, 3 * MiB + 5)]
    uid = upload_id(outcome["url"])
    status = get_json(server, f"/upload/{uid}/status")
    assert status["status"] == "completed" and status["md5"] == file_md5(data)
    assert status["filename"] == "draft.bin"


def test_checksum_mismatch_drops_that_patch_and_the_client_resends(
        server: ServerProcess, tus_js_client: Path, tmp_path: Path) -> None:
    data = make_file(tmp_path / "sum.bin", 4 * MiB)
    client = NodeUpload(tus_js_client, endpoint=server.url + "/files/", file=str(data),
                      chunkSize=MiB, checksum="sha1", corruptChecksumAt=2 * MiB)
    outcome = client.finish()
    assert outcome["e"] == "success", client.events
    statuses = [p["status"] for p in client.responses("PATCH")]
    assert statuses.count(460) == 1 and statuses.count(204) == 4, statuses
    # After the 460 the server still stood at 2 MiB: those bytes were dropped.
    heads = client.responses("HEAD")
    assert heads and heads[-1]["offset"] == str(2 * MiB)
    uid = upload_id(outcome["url"])
    assert get_json(server, f"/upload/{uid}/status")["md5"] == file_md5(data)


def test_server_crash_and_restart_mid_upload(server: ServerProcess, tus_js_client: Path,
                                             tmp_path: Path) -> None:
    data = make_file(tmp_path / "crash.bin", 6 * MiB + 99)
    client = NodeUpload(tus_js_client, endpoint=server.url + "/files/", file=str(data),
                      chunkSize=MiB, holdAt=2 * MiB,
                      retryDelays=[100, 300, 600, 1000, 2000, 3000, 5000, 8000])
    client.next_event("hold")
    server.kill()  # SIGKILL: nothing is shut down cleanly
    client.release()  # the next PATCH meets a dead server and retries
    server.start()
    outcome = client.finish()
    assert outcome["e"] == "success", client.events
    heads = client.responses("HEAD")
    assert heads and heads[0]["offset"] == str(2 * MiB)  # what was acknowledged survived
    uid = upload_id(outcome["url"])
    assert get_json(server, f"/upload/{uid}/status")["md5"] == file_md5(data)
