"""tests/support's ServerProcess keeps its promises: a clean environment, a
working folder of its own, restart on the same port and data, pause and
resume, cleanup of a paused process when the test fails, and no server
outliving the test process (nor the thread that started it)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

import pytest

from support import ServerProcess, server_env, wait_until

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parent


def process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat; "gone" once the pid is reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "gone"
    return stat.rsplit(")", 1)[1].split()[0]


def dead(pid: int) -> bool:
    return process_state(pid) in ("gone", "Z", "X")


def test_settings_become_uploader_variables_and_nothing_else_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPLOADER_LIMITS_MAX_FILE_SIZE", "1")
    env = server_env({"storage.fsync": True, "merge.wait_seconds": 0, "auth.tokens": "a:b"})
    assert {k: v for k, v in env.items() if k.startswith("UPLOADER_")} == {
        "UPLOADER_STORAGE_FSYNC": "true", "UPLOADER_MERGE_WAIT_SECONDS": "0",
        "UPLOADER_AUTH_TOKENS": "a:b"}
    with pytest.raises(ValueError, match="section.key"):
        server_env({"fsync": True})


def test_server_reads_neither_the_shell_environment_nor_a_config_yaml_beside_the_test(
        start_server: Callable[..., ServerProcess], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Both would make a 100-byte file too large if they leaked in.
    monkeypatch.setenv("UPLOADER_LIMITS_MAX_FILE_SIZE", "1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.yaml").write_text("limits:\n  max_file_size: 1\n")
    monkeypatch.chdir(elsewhere)
    server = start_server()
    assert server.folder != elsewhere and server.data_dir == server.folder / "data"
    assert server.init(100)["size"] == 100
    # Explicit settings are what reaches it.
    limited = start_server({"limits.max_file_size": 50}, name="limited")
    code, doc = limited.json("POST", "/upload/init", {"filename": "f", "size": 100,
                                                      "chunk_size": 65536})
    assert code == 413 and doc["error"]["code"] == "too_large"
    with pytest.raises(ValueError, match="config.yaml"):
        ServerProcess(elsewhere)


def test_restart_keeps_port_and_data_and_appends_to_the_log(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server({"logging.format": "json"})
    # An access line is written after the answer went out: each is waited for.
    status_line = re.escape('"route": "/upload/{id}/status"')
    port, upload_id = server.port, server.init(100)["upload_id"]
    server.restart()
    assert server.port == port and server.status(upload_id)["size"] == 100
    wait_until(lambda: server.count_log(status_line) == 1, "the status access line")
    server.kill()  # a crash, then a start again
    assert not server.running
    server.start()
    assert server.status(upload_id)["size"] == 100
    wait_until(lambda: server.count_log(status_line) == 2, "the second status access line")
    lines = server.log_lines()  # every line is one JSON object
    assert sum("serving on" in line["msg"] for line in lines) == 3
    assert [line["status"] for line in lines if line.get("route") == "/upload/{id}/status"
            ] == [200, 200]


def test_a_paused_server_is_stopped_when_the_test_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="the test failed"):
        with ServerProcess(tmp_path) as server:
            server.pause()
            assert server.proc is not None
            wait_until(lambda: process_state(server.proc.pid) == "T", "the server to stop")
            raise RuntimeError("the test failed")
    assert not server.running and server.proc.returncode is not None


def test_pause_then_resume_serves_again(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    assert server.proc is not None
    server.pause()
    wait_until(lambda: process_state(server.proc.pid) == "T", "the server to stop")
    server.resume()
    assert server.call("GET", "/healthz").code == 200


def test_a_server_started_from_a_thread_outlives_the_thread(
        start_server: Callable[..., ServerProcess]) -> None:
    # PR_SET_PDEATHSIG fires when the *thread* that forked the child ends.
    started: list[ServerProcess] = []
    worker = threading.Thread(target=lambda: started.append(start_server()))
    worker.start()
    worker.join(60)
    [server] = started
    task = Path(f"/proc/self/task/{worker.native_id}")
    wait_until(lambda: not task.exists(), "the thread to be gone from the kernel too")
    # Had its end sent SIGKILL, the server could not answer any more.
    assert server.call("GET", "/healthz").code == 200


def test_server_dies_with_the_test_process(tmp_path: Path) -> None:
    """The test process SIGKILLed (no teardown at all): its server goes too."""
    script = (f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
              "from pathlib import Path\n"
              "from support import ServerProcess\n"
              f"server = ServerProcess(Path({str(tmp_path)!r})).start()\n"
              "print(server.proc.pid, flush=True)\n"
              "sys.stdin.read()\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    assert parent.stdout is not None
    pid = 0
    try:
        pid = int(parent.stdout.readline())
        assert not dead(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        wait_until(lambda: dead(pid), "the orphaned server to die", timeout=15)
    finally:
        if pid and not dead(pid):
            os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
        parent.wait(30)
        for f in (parent.stdin, parent.stdout):
            f.close()
