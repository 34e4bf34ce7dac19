"""How the client reaches the server: through the proxy the environment
names (HTTP_PROXY / HTTPS_PROXY, unless NO_PROXY), over TLS with the CA given
by --cacert or SSL_CERT_FILE, and along the redirect S3 answers a download
with, without handing the bearer token to another origin."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from support import ServerProcess, file_md5, write_random
from uploader.client import UploadClient, UploadClientError

from .netkit import ForwardProxy, TLSFront, make_ca_and_cert

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "SSL_CERT_FILE",
              "SSL_CERT_DIR")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    p = ForwardProxy()
    yield p
    p.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_ca_and_cert(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls(server_port: int, pki: tuple[Path, Path, Path]) -> Iterator[TLSFront]:
    front = TLSFront(server_port, pki[1], pki[2])
    yield front
    front.close()


def test_http_proxy_carries_every_call(server: str, proxy: ForwardProxy, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    src = tmp_path / "via-proxy.bin"
    md5 = write_random(src, 700_000)
    with UploadClient(server, chunk_size=256 * 1024) as client:
        upload = client.upload(src)
        client.download(upload["upload_id"], tmp_path / "back.bin")
    assert file_md5(tmp_path / "back.bin") == md5
    targets = [s.target for s in proxy.seen]
    assert f"{server}/upload/init" in targets
    assert sum("/chunk?index=" in t for t in targets) == 3
    assert f"{server}/files/{upload['upload_id']}" in targets


def test_no_proxy_goes_direct(server: str, proxy: ForwardProxy, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    src = tmp_path / "direct.bin"
    write_random(src, 100_000)
    with UploadClient(server) as client:
        assert client.upload(src)["status"] == "completed"
    assert proxy.seen == []


def test_https_with_cacert_or_ssl_cert_file(tls: TLSFront, pki: tuple[Path, Path, Path],
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    ca = str(pki[0])
    src = tmp_path / "tls.bin"
    md5 = write_random(src, 200_000)
    with UploadClient(tls.url, cacert=ca) as client:
        upload = client.upload(src)
    assert upload["md5"] == md5

    with UploadClient(tls.url) as client, pytest.raises(UploadClientError) as refused:
        client.status(upload["upload_id"])
    assert refused.value.code == "tls" and not refused.value.retryable
    assert "--cacert" in refused.value.message

    monkeypatch.setenv("SSL_CERT_FILE", ca)
    with UploadClient(tls.url) as client:
        assert client.status(upload["upload_id"])["status"] == "completed"


def test_https_through_a_proxy_tunnels(tls: TLSFront, proxy: ForwardProxy,
                                       pki: tuple[Path, Path, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    src = tmp_path / "tunnel.bin"
    write_random(src, 100_000)
    with UploadClient(tls.url, cacert=str(pki[0])) as client:
        assert client.upload(src)["status"] == "completed"
    assert proxy.seen and {(s.method, s.target) for s in proxy.seen} == {
        ("CONNECT", f"localhost:{tls.port}")}


def test_cli_cacert(tls: TLSFront, pki: tuple[Path, Path, Path], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("UPLOADER_") and k.upper() not in PROXY_VARS}
    src = tmp_path / "cli-tls.bin"
    write_random(src, 100_000)
    cmd = [sys.executable, "-m", "uploader", "upload", str(src), "--url", tls.url, "-q"]
    env["UPLOADER_CLIENT_STATE"] = str(tmp_path / "state.json")
    untrusted = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                               timeout=60)
    assert untrusted.returncode == 1 and "Traceback" not in untrusted.stderr
    assert "tls: " in untrusted.stderr and "--cacert" in untrusted.stderr
    trusted = subprocess.run(cmd + ["--cacert", str(pki[0])], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert trusted.returncode == 0, trusted.stderr
    missing = subprocess.run(cmd + ["--cacert", str(tmp_path / "nope.pem")], env=env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (f"uploader: --cacert {tmp_path / 'nope.pem'}: "
                                      f"No such file or directory")


def test_download_follows_the_s3_redirect_without_the_token(
        s3_server, tmp_path: Path, proxy: ForwardProxy) -> None:  # noqa: F811
    """`s3.download: redirect` (the default) answers 302 to a presigned URL on
    the object store; the CLI used to fail there with http_error (302). The
    proxy sees both requests: the token goes to the server only."""
    token = "t0ken-for-alice"
    settings: dict[str, object] = {
        f"s3.{k}": v for k, v in s3_server.config(s3_server.new_bucket()).items()}
    settings.update({"storage.backend": "s3", "auth.enabled": True, "s3.download": "redirect",
                     "auth.tokens": f"alice:{hashlib.sha256(token.encode()).hexdigest()}"})
    with ServerProcess(tmp_path / "srv", settings) as server:
        url = server.url
        src = tmp_path / "in-s3.bin"
        md5 = write_random(src, 600_000)
        with UploadClient(url, token=token) as client:
            upload_id = client.upload(src)["upload_id"]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("UPLOADER_") and k.upper() not in PROXY_VARS}
        env["HTTP_PROXY"] = proxy.url
        out = tmp_path / "out" / "copy.bin"
        out.parent.mkdir()
        run = subprocess.run([sys.executable, "-m", "uploader", "download", upload_id, "--url", url,
                              "--token", token, "-o", str(out), "-q"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert file_md5(out) == md5
    to_server = [s for s in proxy.seen if s.target.startswith(f"{url}/files/")]
    to_s3 = [s for s in proxy.seen if s.target.startswith(s3_server.endpoint)]
    assert to_server and all(s.headers.get("Authorization") == f"Bearer {token}"
                             for s in to_server)
    assert to_s3 and all("X-Amz-Signature=" in s.target for s in to_s3)
    assert not any("Authorization" in s.headers for s in to_s3)
