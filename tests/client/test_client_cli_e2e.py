"""The CLI in a subprocess against a real server: killed mid-way, run again, resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

from support import REPO_ROOT, MiB, file_md5, write_random
from uploader.client import UploadClient

from .proxy import ChunkProxy

CLI = [sys.executable, "-c", "import sys; from uploader.client_cli import main; sys.exit(main())"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("UPLOADER_TOKEN", "UPLOADER_URL")}
    env.update(UPLOADER_CLIENT_STATE=str(tmp_path / "cfg" / "state.json"), PYTHONUNBUFFERED="1")
    return env


def test_cli_killed_midway_resumes_and_sends_only_missing_chunks(
        server: str, tmp_path: Path, make_proxy: Callable[..., ChunkProxy]) -> None:
    src = tmp_path / "big.bin"
    md5 = write_random(src, 8 * MiB)
    args = ["upload", str(src), "--parallel", "2", "--chunk-size", "1MiB", "--verbose"]

    # Run 1 goes through a proxy that lets 3 chunk PUTs through and holds the
    # next ones: once 3 were answered and one is held, the CLI is mid-way and
    # the server's state is exactly known, so it is killed right there.
    # (The proxy only decides *when*; the upload id has to be fixed by then,
    # which is the point: the state file must already hold it.)
    proxy1 = make_proxy(admit_puts=3)
    run1 = subprocess.Popen(CLI + args + ["--url", proxy1.url], cwd=REPO_ROOT, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proxy1.wait_for(lambda: len(proxy1.puts("200")) == 3 and bool(proxy1.puts("stalled")))
    finally:
        run1.send_signal(signal.SIGKILL)
        out1, err1 = run1.communicate(timeout=30)
    assert run1.returncode == -signal.SIGKILL, err1.decode()

    state = json.loads((tmp_path / "cfg" / "state.json").read_text())["uploads"]
    [entry] = state.values()
    upload_id = entry["upload_id"]
    with UploadClient(server) as client:
        before = client.status(upload_id)
    assert before["status"] == "in_progress"
    assert before["received"] == sorted(p.chunk_index for p in proxy1.puts("200"))
    assert len(before["received"]) == 3

    # Run 2: same command (same file, same URL as far as the fingerprint goes).
    # The state is keyed by URL, so run 2 must use the same proxy URL: a fresh
    # passthrough proxy on another port would be another server. Reuse proxy1's
    # port by letting it admit everything from now on.
    with proxy1.cond:
        proxy1.admit_puts = None
        first_new = len(proxy1.log)
    run2 = subprocess.run(CLI + args + ["--url", proxy1.url], cwd=REPO_ROOT, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert run2.returncode == 0, run2.stderr
    assert f"resuming upload {upload_id}" in run2.stderr
    assert "3/8 chunks on the server, sending 5" in run2.stderr

    with proxy1.cond:
        second = [e for e in proxy1.log[first_new:] if e.chunk_index is not None]
    assert sorted(e.chunk_index for e in second) == sorted(set(range(8)) - set(before["received"]))
    assert all(e.outcome == "200" for e in second)

    path, got_id, got_md5, location = run2.stdout.strip().split("\t")
    assert (path, got_id, got_md5) == (str(src), upload_id, md5)
    assert location == f"{proxy1.url}/files/{upload_id}"
    # Completed: the resume entry is gone.
    assert json.loads((tmp_path / "cfg" / "state.json").read_text())["uploads"] == {}

    # And the CLI's download gives the same bytes back.
    dest = tmp_path / "copy.bin"
    run3 = subprocess.run(CLI + ["download", upload_id, "--url", server, "-o", str(dest), "-q"],
                          cwd=REPO_ROOT, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert run3.returncode == 0, run3.stderr
    assert file_md5(dest) == md5


def test_cli_status_and_failures(server: str, tmp_path: Path) -> None:
    src = tmp_path / "small.bin"
    write_random(src, 100_000)
    ok = subprocess.run(CLI + ["upload", str(src), "--url", server], cwd=REPO_ROOT,
                        env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    upload_id = ok.stdout.split("\t")[1]

    st = subprocess.run(CLI + ["status", upload_id, "--url", server], cwd=REPO_ROOT,
                        env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert st.returncode == 0 and json.loads(st.stdout)["status"] == "completed"

    unknown = subprocess.run(CLI + ["status", "0" * 32, "--url", server], cwd=REPO_ROOT,
                             env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "not_found" in unknown.stderr

    # One bad file among good ones: the others still upload, the exit code says 1.
    mixed = subprocess.run(CLI + ["upload", str(tmp_path / "missing"), str(src), "--url", server,
                                  "-q"], cwd=REPO_ROOT, env=_env(tmp_path), capture_output=True,
                           text=True, timeout=120)
    assert mixed.returncode == 1
    assert "missing" in mixed.stderr and mixed.stdout.count("\t") == 3
