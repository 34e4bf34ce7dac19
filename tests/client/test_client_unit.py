"""The client's pieces that need no server: sizes, retry policy, resume state, CLI parsing."""

from __future__ import annotations

import argparse
import email.utils
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uploader import client as c
from uploader import client_cli as cli
from uploader import progress

MiB, GiB = 1 << 20, 1 << 30


def test_client_module_works_alone_with_the_stdlib(tmp_path: Path) -> None:
    # The promise: copy client.py anywhere and import it with nothing installed.
    shutil.copy(c.__file__, tmp_path / "client.py")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import client; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'tornado','yaml','aiomysql','aiosqlite','redis','jinja2','uploader','tqdm'}); "
            "print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr + out.stdout


@pytest.mark.parametrize("size,start,expected", [
    (0, 8 * MiB, 8 * MiB),
    (1000, 8 * MiB, 8 * MiB),                   # one short chunk
    (10_000 * MiB, 1 * MiB, 1 * MiB),           # exactly 10,000 chunks
    (10_000 * MiB + 1, 1 * MiB, 2 * MiB),       # one byte more: double
    (50 * GiB, 64 * 1024, 8 * MiB),             # doubled 7 times
])
def test_chunk_size_grows_to_fit_10000_chunks(size: int, start: int, expected: int) -> None:
    chosen = c.choose_chunk_size(size, start)
    assert chosen == expected
    assert -(-size // chosen) <= 10_000


def test_retry_delay_backs_off_with_jitter_and_a_cap() -> None:
    for attempt in range(12):
        d = c.retry_delay(attempt, base=0.5, cap=30.0, retry_after=None)
        full = min(30.0, 0.5 * 2 ** attempt)
        assert full / 2 <= d <= full


def test_retry_delay_honours_retry_after() -> None:
    assert c.retry_delay(0, 0.5, 30.0, retry_after=7) == 7
    assert c.retry_delay(5, 0.5, 30.0, retry_after=0) == 0


def test_retry_after_parsing() -> None:
    assert c._parse_retry_after("3") == 3
    assert c._parse_retry_after(None) is None
    assert c._parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 100, usegmt=True)
    assert 90 < c._parse_retry_after(later) <= 101  # type: ignore[operator]


@pytest.mark.parametrize("code,status,retryable", [
    ("network", 0, True), ("internal", 500, True), ("unavailable", 503, True),
    ("insufficient_storage", 507, True), ("rate_limited", 429, True), ("conflict", 409, True),
    ("incomplete", 409, False), ("not_found", 404, False), ("invalid_request", 400, False),
    ("checksum_mismatch", 422, False), ("unauthorized", 401, False), ("changed", 0, False),
])
def test_which_errors_are_retried(code: str, status: int, retryable: bool) -> None:
    assert c.UploadClientError(code, status, "m").retryable is retryable


def test_bad_base_url_is_refused() -> None:
    with pytest.raises(ValueError):
        c.UploadClient("ftp://x")


def test_unreachable_server_is_retried_then_reported(tmp_path: Path) -> None:
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with c.UploadClient(f"http://127.0.0.1:{port}", retries=2, backoff=0.001) as client:
        with pytest.raises(c.UploadClientError) as info:
            client.status("0" * 32)
    assert (info.value.code, info.value.status) == ("network", 0)


# ---- resume state ------------------------------------------------------------------

def test_state_path_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("UPLOADER_CLIENT_STATE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert cli.state_path() == tmp_path / "xdg" / "uploader" / "state.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cli.state_path() == tmp_path / "home" / ".config" / "uploader" / "state.json"
    monkeypatch.setenv("UPLOADER_CLIENT_STATE", str(tmp_path / "s.json"))
    assert cli.state_path() == tmp_path / "s.json"


def test_fingerprint_changes_with_the_file_and_the_server(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 10)
    one = cli.fingerprint(str(f), "http://h:1")
    assert cli.fingerprint(str(f), "http://h:1/") == one
    assert cli.fingerprint(str(f), "http://h:2") != one
    os.utime(f, ns=(1, 1))
    assert cli.fingerprint(str(f), "http://h:1") != one


def test_resume_state_save_load_clear(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "state.json"
    a, b = cli.FileResumeState(path, "key-a"), cli.FileResumeState(path, "key-b")
    assert a.load() is None
    a.save("a" * 32)
    b.save("b" * 32)
    assert (a.load(), b.load()) == ("a" * 32, "b" * 32)
    a.clear()
    assert (a.load(), b.load()) == (None, "b" * 32)
    assert json.loads(path.read_text())["uploads"].keys() == {"key-b"}
    # Written by temp + rename: no temp file is left behind.
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json", "state.json.lock"]


def test_resume_state_survives_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{half a fil")
    state = cli.FileResumeState(path, "k")
    assert state.load() is None
    state.save("c" * 32)
    assert state.load() == "c" * 32


# ---- CLI parsing and progress ------------------------------------------------------

@pytest.mark.parametrize("text,value", [("1048576", MiB), ("8MiB", 8 * MiB), ("512K", 512 * 1024),
                                        ("1 GiB", GiB), ("2mb", 2_000_000)])
def test_parse_size(text: str, value: int) -> None:
    assert cli.parse_size(text) == value


def test_parse_size_refuses_junk() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_size("8 parsecs")


def test_usage_errors_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPLOADER_URL", raising=False)
    for argv in ([], ["upload"], ["upload", "f"], ["upload", "f", "--url", "http://h",
                                                   "--parallel", "0"], ["nope"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2, argv


def test_subcommands_plug_into_another_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPLOADER_TOKEN", "t0k")
    parser = argparse.ArgumentParser(prog="uploader")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve")  # what the server's CLI has besides ours
    cli.add_client_commands(sub)
    args = parser.parse_args(["upload", "a", "b", "--url", "http://h:1", "--chunk-size", "1MiB"])
    assert (args.func, args.files, args.chunk_size, args.parallel, args.token) == \
        (cli.cmd_upload, ["a", "b"], MiB, 4, "t0k")
    assert parser.parse_args(["download", "x", "--url", "u", "-o", "p"]).func is cli.cmd_download
    assert parser.parse_args(["status", "x", "--url", "u"]).func is cli.cmd_status


def test_missing_file_is_a_failed_upload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("UPLOADER_CLIENT_STATE", str(tmp_path / "state.json"))
    assert cli.main(["upload", str(tmp_path / "nope"), "--url", "http://127.0.0.1:9"]) == 1
    assert "nope" in capsys.readouterr().err


def test_text_progress_bar_without_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes "from tqdm import" fail
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = progress.make_bar(4 * MiB, "f.bin", quiet=False)
    assert isinstance(bar, progress._TextBar)
    bar.update_to(1 * MiB)
    bar.update_to(4 * MiB)
    bar.close()
    out = sys.stderr.getvalue()  # type: ignore[attr-defined]
    assert "f.bin:  25.0% 1.0/4.0 MiB" in out and "f.bin: 100.0% 4.0/4.0 MiB" in out


def test_tqdm_bar_counts_resumed_bytes_as_initial(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    fresh = progress.make_bar(4 * MiB, "f", quiet=False)
    fresh.update_to(0)
    fresh.update_to(MiB)
    assert (fresh._bar.initial, fresh._bar.n) == (0, MiB)
    fresh.close()
    resumed = progress.make_bar(4 * MiB, "f", quiet=False)
    resumed.update_to(3 * MiB)  # already on the server
    resumed.update_to(4 * MiB)
    assert (resumed._bar.initial, resumed._bar.n) == (3 * MiB, 4 * MiB)
    resumed.close()
