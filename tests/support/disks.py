"""A small tmpfs to fill up: the only way to make a real full disk in a test."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .services import require_service


@contextmanager
def small_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. ``"1m"``) at ``mount`` for the block's
    length; needs root (skips locally without it, fails in CI)."""
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                             str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        require_service("tmpfs mount", result.stderr.strip() or "mount failed (not root?)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
