"""The `uploader` command as a user meets it: --version, help, list, delete,
--json output, a download that will not overwrite, Ctrl-C that says how to
resume. Every run is a subprocess against the real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

from support import file_md5, write_random
from uploader import __version__
from uploader.client import UploadClient

from .proxy import ChunkProxy

MiB = 1 << 20
CLI = [sys.executable, "-m", "uploader"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADER_")}
    env.update(UPLOADER_CLIENT_STATE=str(tmp_path / "cfg" / "state.json"), PYTHONUNBUFFERED="1")
    return env


def cli(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + list(args), cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def test_version_and_serve_help(tmp_path: Path) -> None:
    version = cli(tmp_path, "--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"uploader {__version__} (resumable-uploader)"
    helptext = " ".join(cli(tmp_path, "serve", "--help").stdout.split())
    assert "--host HOST address to bind" in helptext
    assert "--port PORT TCP port" in helptext


def test_upload_json_then_list_and_delete(server: str, tmp_path: Path) -> None:
    src = tmp_path / "listed.bin"
    md5 = write_random(src, MiB + 5)
    up = cli(tmp_path, "upload", str(src), "--url", server, "--chunk-size", "512K", "-q", "--json")
    assert up.returncode == 0, up.stderr
    [line] = up.stdout.splitlines()
    result = json.loads(line)
    upload_id = result["upload_id"]
    assert result == {"path": str(src), "upload_id": upload_id, "size": MiB + 5, "md5": md5,
                      "url": f"{server}/files/{upload_id}"}

    listed = cli(tmp_path, "list", "--url", server, "--filename", "listed.bin")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "CHUNKS", "SIZE", "UPDATED", "FILENAME"]
    [row] = [r for r in rows if r.startswith(upload_id)]
    assert row.split()[:4] == [upload_id, "completed", "3/3", "1.0MiB"]
    assert row.endswith("  listed.bin")

    as_json = cli(tmp_path, "list", "--url", server, "--status", "completed", "--json")
    uploads = [json.loads(x) for x in as_json.stdout.splitlines()]
    assert upload_id in {u["upload_id"] for u in uploads}
    assert all(u["status"] == "completed" for u in uploads)

    gone = cli(tmp_path, "delete", upload_id, "--url", server)
    assert (gone.returncode, gone.stdout) == (0, f"deleted {upload_id}\n")
    again = cli(tmp_path, "delete", upload_id, "--url", server, "--json")
    assert again.returncode == 1 and again.stdout == ""
    assert f"uploader: {upload_id}: not_found (404)" in again.stderr
    listed = cli(tmp_path, "list", "--url", server, "--json")
    assert upload_id not in listed.stdout


def test_download_refuses_to_overwrite_without_force(server: str, tmp_path: Path) -> None:
    src = tmp_path / "kept.bin"
    md5 = write_random(src, 300_000)
    with UploadClient(server) as client:
        upload_id = client.upload(src)["upload_id"]
    # Next to the source, as a user would run it: the default name is taken.
    refused = cli(tmp_path, "download", upload_id, "--url", server, "-q")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "uploader: kept.bin exists; use --force to overwrite it"
    assert file_md5(src) == md5 and refused.stdout == ""

    other = tmp_path / "other.bin"
    other.write_bytes(b"not the upload")
    forced = cli(tmp_path, "download", upload_id, "--url", server, "-q", "-o", str(other),
                 "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout) == {"upload_id": upload_id, "path": str(other),
                                         "size": 300_000, "md5": md5}
    assert file_md5(other) == md5


def test_ctrl_c_says_how_to_resume_and_exits_130(
        server: str, tmp_path: Path, make_proxy: Callable[..., ChunkProxy]) -> None:
    src = tmp_path / "big.bin"
    md5 = write_random(src, 6 * MiB)
    args = ["upload", str(src), "--parallel", "2", "--chunk-size", "1MiB", "-q"]
    # The proxy lets 2 chunk PUTs through and holds the next ones with no
    # answer: the CLI is then certainly mid-upload, blocked in a request.
    proxy = make_proxy(admit_puts=2)
    run1 = subprocess.Popen(CLI + args + ["--url", proxy.url], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proxy.wait_for(lambda: len(proxy.puts("200")) == 2 and bool(proxy.puts("stalled")))
        run1.send_signal(signal.SIGINT)
        out, err = run1.communicate(timeout=30)  # promptly, although a PUT is held
    finally:
        if run1.poll() is None:
            run1.kill()
            run1.wait()
    assert run1.returncode == 130, err
    assert "Traceback" not in err and out == ""
    state = json.loads((tmp_path / "cfg" / "state.json").read_text())["uploads"]
    [entry] = state.values()
    assert err.strip() == (f"uploader: interrupted; run the same command again to resume "
                           f"{src} (upload {entry['upload_id']})")

    with proxy.cond:
        proxy.admit_puts = None  # same URL again, nothing held
    run2 = subprocess.run(CLI + args + ["--url", proxy.url, "-v"], cwd=tmp_path,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert run2.returncode == 0, run2.stderr
    assert f"resuming upload {entry['upload_id']}" in run2.stderr
    assert run2.stdout.split("\t")[1:3] == [entry["upload_id"], md5]
