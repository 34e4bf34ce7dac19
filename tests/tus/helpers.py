"""What the tus tests share besides ``support``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support import MiB, ServerProcess, write_random

TUS = {"Tus-Resumable": "1.0.0"}
__all__ = ["MiB", "TUS", "get_json", "make_file", "upload_id"]


def make_file(path: Path, size: int) -> Path:
    write_random(path, size)
    return path


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


def get_json(server: ServerProcess, path: str) -> Any:
    code, doc = server.json("GET", path)
    assert code == 200, doc
    return doc
