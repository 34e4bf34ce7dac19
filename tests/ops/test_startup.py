"""What a server says about itself at start: the configuration it loaded,
and its version (in the log, on /healthz)."""

from __future__ import annotations

from pathlib import Path

from support import ServerProcess
from uploader import __version__


def test_the_loaded_config_file_is_logged(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "uploader.yaml"
    config.parent.mkdir()
    config.write_text("merge:\n  wait_seconds: 5\nlogging:\n  format: json\n")
    with ServerProcess(tmp_path / "srv", config=config) as server:
        assert server.json("GET", "/healthz") == (200, {"status": "ok", "version": __version__})
        messages = [line["msg"] for line in server.log_lines() if line.get("msg")]
    loaded = [m for m in messages if m.startswith("configuration: ")]
    assert loaded and loaded[0].startswith(f"configuration: file {config}")
    assert "UPLOADER_STORAGE_DATA_DIR" in loaded[0]  # which variables took part
    assert any(m.startswith("serving on http://127.0.0.1:") and __version__ in m
               for m in messages)


def test_no_config_file_is_said_too(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, {"logging.format": "json"}) as server:
        messages = [line["msg"] for line in server.log_lines() if line.get("msg")]
    assert any(m.startswith("configuration: no file") for m in messages)
