"""What the browser tests share: the chunk size the page uses here, and the
server they drive."""

from __future__ import annotations

from pathlib import Path

from support import MiB, ServerProcess

# 1 MiB chunks (the page's default comes from the server): a 30 MiB file makes 30.
CHUNK = MiB


def page_server(folder: Path) -> ServerProcess:
    """A server for the page (not started: use it as a context manager)."""
    return ServerProcess(folder, {"limits.chunk_size_default": CHUNK})
