"""UploadClient and the CLI in direct mode: chunks go from the client straight
to a real S3 server (moto) through presigned URLs, never through the
uploader server. A ChunkProxy in front of moto sees every part PUT (and can
hold them, or refuse an expired URL as S3 would: moto checks no expiry)."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest

from support import REPO_ROOT, MiB, ServerProcess, file_md5, md5, wait_until, write_random
from support.s3 import MotoS3
from uploader.client import UploadClient, UploadClientError, _PartUrls

from .proxy import ChunkProxy
from .test_client_cli_e2e import CLI, _env
from .test_client_e2e import IdBox

CS = 5 * MiB  # S3's smallest part
BYTES_IN = "uploader_chunk_bytes_received_total"
URL_CALLS = "uploader_http_requests_total"


@dataclass
class Direct:
    server: ServerProcess
    store: ChunkProxy  # moto behind it: every part PUT passes here
    s3: MotoS3
    bucket: str

    def object_md5(self, upload: dict[str, Any]) -> str:
        return md5(self.s3.get(self.bucket, f"{upload['upload_id']}_{upload['filename']}"))

    def part_puts(self, outcome: str | None = "200") -> list[int]:
        return [e.chunk_index for e in self.store.puts(outcome) if e.chunk_index is not None]

    def url_requests(self) -> float:
        return self.server.metric(URL_CALLS, route="/upload/{id}/urls", method="POST",
                                  status="200")


@pytest.fixture
def direct(s3_server: MotoS3, tmp_path: Path) -> Iterator[Callable[..., Direct]]:
    made: list[Direct] = []

    def make(presign_expiry: int = 300, **proxy: Any) -> Direct:
        bucket = s3_server.new_bucket()
        store = ChunkProxy(int(s3_server.endpoint.rsplit(":", 1)[1]), **proxy)
        settings = {"storage.backend": "s3", "s3.direct": True,
                    "s3.presign_expiry": presign_expiry,
                    **{f"s3.{k}": v for k, v in s3_server.config(bucket).items()},
                    "s3.endpoint_url": store.url}  # presigned URLs lead to the proxy
        server = ServerProcess(tmp_path / f"server{len(made)}", settings)
        made.append(Direct(server, store, s3_server, bucket))
        server.start()
        return made[-1]

    yield make
    for d in made:
        d.server.close()
        d.store.close()


class Stop(Exception):
    """Stands in for a process that dies mid-upload."""


def test_python_client_stopped_midway_resumes_sending_only_missing_parts(
        direct: Callable[..., Direct], make_client: Callable[..., UploadClient],
        tmp_path: Path) -> None:
    d = direct()
    src = tmp_path / "big.bin"
    whole = write_random(src, 6 * CS + 1234)  # 7 chunks, the last one short
    box = IdBox()

    def stop_after_three(sent: int, total: int) -> None:
        if sent >= 3 * CS:
            raise Stop()
    with pytest.raises(Stop):
        make_client(d.server.url, parallel=2, chunk_size=CS).upload(
            src, resume_state=box, progress=stop_after_three)
    upload_id = box.upload_id
    assert upload_id
    first = d.part_puts()
    # The server knows the parts from the store's ListParts, not from us.
    before = make_client(d.server.url).status(upload_id)
    assert before["direct"] is True and before["status"] == "in_progress"
    assert before["received"] == sorted(set(first)) and len(first) >= 3

    seen: list[int] = []
    client = make_client(d.server.url, parallel=2, chunk_size=CS)
    done = client.upload(src, resume_state=box, progress=lambda s, t: seen.append(s))
    assert done["upload_id"] == upload_id and box.cleared
    assert done["md5_claimed"] == whole and done["verified"] == "parts"
    again = d.part_puts()[len(first):]
    assert sorted(again) == sorted(set(range(7)) - set(before["received"]))
    assert seen[0] == sum(min(CS, src.stat().st_size - i * CS) for i in before["received"])
    assert seen == sorted(seen) and seen[-1] == src.stat().st_size
    assert d.object_md5(done) == whole
    # Not one chunk byte through the server; the URLs came in few requests.
    assert d.server.metric(BYTES_IN) == 0
    assert d.server.metric("uploader_part_urls_signed_total") >= 7
    assert d.url_requests() <= 7


def test_part_urls_are_asked_for_in_batches_and_reused(
        direct: Callable[..., Direct], make_client: Callable[..., UploadClient]) -> None:
    d = direct()
    client = make_client(d.server.url)
    data = [bytes([i]) * CS for i in range(4)]
    upload = client._json("POST", "/upload/init", {"filename": "x", "size": 4 * CS,
                                                   "chunk_size": CS}, ok=(201,))[1]
    urls = _PartUrls(client, upload["upload_id"])
    waiting = [(i, md5(data[i])) for i in (1, 2, 3)]
    first = urls.get(0, md5(data[0]), lambda: waiting)
    assert first["index"] == 0 and first["headers"]["Content-MD5"]
    assert d.url_requests() == 1
    for i in (1, 2, 3):  # already signed by the first request
        assert urls.get(i, md5(data[i]), lambda: [])["index"] == i
    assert d.url_requests() == 1
    # Other bytes for a chunk (the file changed): its own, newly signed URL.
    signed = urls.get(2, md5(data[2]), lambda: [])
    other = urls.get(2, md5(b"other"), lambda: [])
    assert other["headers"]["Content-MD5"] != signed["headers"]["Content-MD5"]
    assert d.url_requests() == 2


def test_expired_urls_are_renewed_mid_upload(
        direct: Callable[..., Direct], make_client: Callable[..., UploadClient],
        tmp_path: Path) -> None:
    """URLs live 2 s here; the proxy refuses expired ones as S3 does. After
    the first chunk the client is held until every URL signed so far has
    expired; the upload still completes, on URLs signed after the pause."""
    d = direct(presign_expiry=2, enforce_expiry=True)
    src = tmp_path / "slow.bin"
    whole = write_random(src, 3 * CS + 7)
    paused_until: list[float] = []

    def hold_after_first_chunk(sent: int, total: int) -> None:
        if 0 < sent < total and not paused_until:
            [signed] = [e.signed_at for e in d.store.puts() if e.signed_at]
            wait_until(lambda: time.time() > signed + 3, "the first URLs to expire", 10)
            paused_until.append(time.time())

    client = make_client(d.server.url, parallel=1, chunk_size=CS, backoff=0.01)
    done = client.upload(src, progress=hold_after_first_chunk)
    assert done["md5_claimed"] == whole and d.object_md5(done) == whole
    after = [e for e in d.store.puts("200") if e.chunk_index != 0]
    assert sorted(e.chunk_index for e in after) == [1, 2, 3]
    # X-Amz-Date has whole seconds: signed after the pause began, renewed.
    assert all(e.signed_at >= int(paused_until[0]) - 1 for e in after)
    # A URL refused as expired (a second boundary) was followed by a success.
    for refused in d.part_puts("403"):
        assert refused in [e.chunk_index for e in after]
    assert d.server.metric(BYTES_IN) == 0


def test_cli_direct_killed_midway_resumes_then_downloads_and_links(
        direct: Callable[..., Direct], tmp_path: Path) -> None:
    d = direct(admit_puts=2)
    src = tmp_path / "cli.bin"
    whole = write_random(src, 4 * CS + 10)  # 5 chunks
    args = ["upload", str(src), "--parallel", "2", "--chunk-size", "5MiB", "--verbose",
            "--url", d.server.url]
    # Run 1: two part PUTs reach the store, the next are held; then SIGKILL.
    run1 = subprocess.Popen(CLI + args, cwd=REPO_ROOT, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        d.store.wait_for(lambda: len(d.store.puts("200")) == 2 and bool(d.store.puts("stalled")))
    finally:
        run1.send_signal(signal.SIGKILL)
        run1.communicate(timeout=30)
    [entry] = json.loads((tmp_path / "cfg" / "state.json").read_text())["uploads"].values()
    upload_id = entry["upload_id"]
    received = d.server.status(upload_id)["received"]
    assert received == sorted(d.part_puts())

    with d.store.cond:
        d.store.admit_puts = None
        first_new = len(d.store.log)
    run2 = subprocess.run(CLI + args, cwd=REPO_ROOT, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert run2.returncode == 0, run2.stderr
    assert f"resuming upload {upload_id}" in run2.stderr
    assert "2/5 chunks on the server, sending 3" in run2.stderr
    with d.store.cond:
        again = [e.chunk_index for e in d.store.log[first_new:]
                 if e.chunk_index is not None and e.outcome == "200"]
    assert sorted(again) == sorted(set(range(5)) - set(received))
    path, got_id, got_md5, _ = run2.stdout.strip().split("\t")
    assert (got_id, got_md5) == (upload_id, whole)
    assert json.loads((tmp_path / "cfg" / "state.json").read_text())["uploads"] == {}
    assert d.server.metric(BYTES_IN) == 0
    upload = d.server.status(upload_id)
    assert d.object_md5(upload) == whole

    # download follows the server's redirect to a presigned GET of the store.
    dest = tmp_path / "copy.bin"
    dl = subprocess.run(CLI + ["download", upload_id, "--url", d.server.url, "-o", str(dest),
                               "-q"], cwd=REPO_ROOT, env=_env(tmp_path), capture_output=True,
                        text=True, timeout=120)
    assert dl.returncode == 0, dl.stderr
    assert file_md5(dest) == whole
    # link prints a URL that needs no token.
    ln = subprocess.run(CLI + ["link", upload_id, "--url", d.server.url, "--expires-in", "60"],
                        cwd=REPO_ROOT, env=_env(tmp_path), capture_output=True, text=True,
                        timeout=60)
    assert ln.returncode == 0, ln.stderr
    url = ln.stdout.strip()
    assert url.startswith(f"{d.server.url}/files/{upload_id}?expires=")
    with urllib.request.urlopen(url, timeout=60) as resp:  # no token; follows to the store
        assert resp.url.startswith(d.store.url) and md5(resp.read()) == whole


def test_download_checks_the_claimed_md5_of_an_upload_verified_by_parts(
        direct: Callable[..., Direct], make_client: Callable[..., UploadClient],
        tmp_path: Path) -> None:
    """The server never hashed a file verified by its parts: the client's
    download checks the uploader's claimed MD5 end to end instead, so a claim
    that is not the file (a mislabelled chunk, say) is caught there."""
    d = direct()
    data = bytes(range(256)) * (CS // 256) + b"tail"
    client = make_client(d.server.url)
    for claim, ok in ((md5(data), True), ("0" * 32, False)):
        _, up = client._json("POST", "/upload/init", {"filename": "c.bin", "size": len(data),
                                                      "chunk_size": CS, "md5": claim}, ok=(201,))
        parts = [data[:CS], data[CS:]]
        _, doc = client._json("POST", f"/upload/{up['upload_id']}/urls", {
            "parts": [{"index": i, "md5": md5(p)} for i, p in enumerate(parts)]})
        for signed in doc["parts"]:
            url = urlsplit(signed["url"])
            conn = http.client.HTTPConnection(url.netloc, timeout=60)
            conn.request("PUT", f"{url.path}?{url.query}", body=parts[signed["index"]],
                         headers=signed["headers"])
            assert conn.getresponse().status == 200
            conn.close()
        _, done = client._json("POST", f"/upload/{up['upload_id']}/complete", {})
        assert (done["verified"], done["md5"], done["md5_claimed"]) == ("parts", None, claim)
        dest = tmp_path / f"{claim[:4]}.bin"
        if ok:
            client.download(up["upload_id"], dest)
            assert dest.read_bytes() == data
        else:
            with pytest.raises(UploadClientError) as info:
                client.download(up["upload_id"], dest)
            assert info.value.code == "checksum_mismatch" and not dest.exists()
