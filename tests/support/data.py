"""Test data: sizes, MD5s, random files made at run time (never committed)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

KiB, MiB = 1 << 10, 1 << 20


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def chunks_of(data: bytes, chunk_size: int) -> list[bytes]:
    return [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)]


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while piece := f.read(MiB):
            digest.update(piece)
    return digest.hexdigest()


def write_random(path: Path, size: int) -> str:
    """Random bytes (incompressible, so nothing can cheat), written in pieces; the MD5."""
    digest = hashlib.md5()
    with open(path, "wb") as f:
        left = size
        while left:
            piece = os.urandom(min(left, MiB))
            f.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()
