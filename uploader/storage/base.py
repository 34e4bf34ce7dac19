"""The storage interface: chunk bytes while an upload runs, the merged file after.

Backends translate their own failures at this edge: a full disk or quota is
``UploadError("insufficient_storage")``, an unreachable object store is
``Unavailable``. Keys are opaque strings chosen by the backend and recorded
in ``uploads.storage_key``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Callable, Protocol, Sequence, runtime_checkable

from ..models import ChunkRecord, Upload


class ChunkWriter(Protocol):
    """One chunk being received. ``write`` runs in a worker thread, one call at
    a time and in order; the others run on the event loop."""

    def write(self, data: bytes) -> None:
        ...

    async def commit(self) -> None:
        """Make the written bytes the chunk's content atomically (replacing an
        earlier copy). After it returns, the bytes survive a crash as far as
        the configured fsync policy says."""

    async def abort(self) -> None:
        """Drop the partial bytes; never raises."""


@dataclass
class StagedFile:
    """A merged file written but not yet published under its final key."""

    upload_id: str
    version: int
    key: str
    md5: str
    size: int
    handle: object = None  # backend-private (a temp path, a multipart id, ...)


class Storage(Protocol):
    async def start(self) -> None:
        ...

    async def close(self) -> None:
        ...

    async def open_chunk(self, upload: Upload, index: int) -> ChunkWriter:
        ...

    async def merge(self, upload: Upload, version: int,
                    progress: Callable[[int], None] | None = None) -> StagedFile:
        """Concatenate every chunk in order into a staged file, computing its
        MD5. Nothing is visible at the final key yet. ``progress`` gets the
        bytes merged so far."""

    async def publish(self, staged: StagedFile) -> None:
        """Move the staged file to its final key atomically."""

    async def discard(self, staged: StagedFile) -> None:
        ...

    async def staged_exists(self, staged: StagedFile) -> bool:
        """Whether a staged file is still waiting to be published (a crash
        between recording ``completed`` and ``publish``)."""

    async def delete_chunks(self, upload_id: str) -> None:
        """Remove every temp chunk of the upload (absent is fine)."""

    async def delete_file(self, key: str) -> None:
        ...

    async def file_size(self, key: str) -> int | None:
        """Size of a published file, None when it is not there."""

    def read_file(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of a published file, in pieces."""

    async def temp_upload_ids(self) -> list[str]:
        """Ids that have temp chunk data, for the orphan sweep."""

    async def recover(self, older_than: float = 0.0) -> int:
        """Remove partial files of crashed writers untouched for
        ``older_than`` seconds; return how many."""


@runtime_checkable
class IncrementalMerge(Protocol):
    """Optional capability: the backend folds chunks into the merged file while
    they arrive, so ``complete`` has little left to do. Purely an optimisation:
    ``merge`` must give the same result with or without it."""

    def chunk_stored(self, upload: Upload, index: int, md5: str, writer: ChunkWriter) -> None:
        """A chunk written through ``writer`` is committed and recorded with ``md5``."""

    def merged_ahead(self, upload_id: str) -> int:
        """Bytes already merged ahead of ``complete`` in this process."""

    async def merge(self, upload: Upload, version: int,
                    progress: Callable[[int], None] | None = None,
                    chunks: Sequence[ChunkRecord] | None = None) -> StagedFile:
        """As ``Storage.merge``; ``chunks`` are the recorded chunk records, which
        the folded state must match to be used."""
