"""What a server says about itself at start: the configuration it loaded,
and its version (in the log, on /healthz)."""

from __future__ import annotations

from pathlib import Path

from uploader import __version__

from .server_process import ServerProcess


def test_the_loaded_config_file_is_logged(tmp_path: Path) -> None:
    # ./config.yaml of the working folder is picked up; the log says which.
    (tmp_path / "config.yaml").write_text("merge:\n  wait_seconds: 5\n")
    with ServerProcess(tmp_path) as server:
        assert server.request("GET", "/healthz") == (200, {"status": "ok",
                                                           "version": __version__})
    messages = [line["msg"] for line in server.log_lines()]
    loaded = [m for m in messages if m.startswith("configuration: ")]
    assert loaded and loaded[0].startswith(f"configuration: file {tmp_path / 'config.yaml'}")
    assert "UPLOADER_STORAGE_DATA_DIR" in loaded[0]  # which variables took part
    assert any(m.startswith("serving on http://127.0.0.1:") and __version__ in m
               for m in messages)


def test_no_config_file_is_said_too(tmp_path: Path) -> None:
    with ServerProcess(tmp_path) as server:
        pass
    messages = [line["msg"] for line in server.log_lines()]
    assert any(m.startswith("configuration: no file") for m in messages)
