"""The storage interface: chunk bytes while an upload runs, the merged file after.

Backends translate their own failures at this edge: a full disk or quota is
``UploadError("insufficient_storage")``, an unreachable object store is
``Unavailable``. Keys are opaque strings chosen by the backend and recorded
in ``uploads.storage_key``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol, runtime_checkable

from ..models import Upload

Progress = Callable[[int], None]
# Clears a chunk's record before its stored bytes change (ChunkWriter.commit).
Forget = Callable[[], Awaitable[None]]


class MissingChunkData(Exception):
    """Chunks recorded in the database whose bytes the storage does not hold
    (or holds with the wrong size). The service forgets those records so the
    client sends the chunks again, rather than merging a hole."""

    def __init__(self, indices: list[int]) -> None:
        super().__init__(f"chunk data missing for {indices[:20]}")
        self.indices = indices


class ChunkWriter(Protocol):
    """One chunk being received. ``write`` runs in a worker thread, one call at
    a time and in order; the others run on the event loop."""

    def write(self, data: bytes) -> None:
        ...

    def writev(self, pieces: list[bytes]) -> None:
        """``write`` of each piece in order, in as few calls as the backend can."""

    async def sync(self) -> None:
        """Make the written bytes durable (as far as the fsync policy says)
        without publishing them yet. Runs outside any lock."""

    async def commit(self, md5: str, forget: Forget | None = None) -> None:
        """Make the synced bytes the chunk's content atomically, replacing an
        earlier copy, and do whatever else the backend needs of a stored chunk
        (the local backend feeds its incremental merge here). Runs under the
        upload's lock, so the file (or part) and its record never disagree.
        ``md5`` is the hex digest the receiver computed of exactly these bytes
        (S3 sends it as Content-MD5). A backend that rewrites stored bytes in
        place (local) calls ``forget`` first when they differ, so a crash
        mid-rewrite leaves the chunk unrecorded rather than recorded wrong."""

    async def abort(self) -> None:
        """Drop the partial bytes; never raises."""

    async def revert(self) -> None:
        """Take a committed chunk out of place again: its record could not be
        written (a full database disk), and a chunk in place must be a
        recorded one. Never raises."""


@dataclass
class StagedFile:
    """A merged file written but not yet published under its final key."""

    upload_id: str
    version: int
    key: str
    # The whole file's MD5 as the storage computed it; None when it did not
    # hash the file (a direct upload verified by its parts: ``verified``).
    md5: str | None
    size: int
    handle: object = None  # backend-private (a temp path, a multipart id, ...)
    verified: str | None = None  # Upload.verified of the result

    def with_claim(self, md5: str | None) -> "StagedFile":
        """Not hashed whole (md5 None): record the client's MD5 as md5, a
        claim that ``verified`` qualifies, never checked."""
        return self if self.md5 is not None else replace(self, md5=md5)


@dataclass(frozen=True)
class PartialMerge:
    """A merged file in the making, found on the storage: a merge's staged
    file (``version`` set) or an incremental fold (``version`` None)."""

    upload_id: str
    version: int | None
    name: str  # backend-private: what remove_partial removes
    size: int


class Storage(Protocol):
    async def start(self) -> None:
        ...

    async def close(self) -> None:
        ...

    async def ping(self) -> None:
        """Check the storage is there and writable (readiness checks);
        raises ``Unavailable`` when it cannot. Creates nothing that stays."""

    async def open_chunk(self, upload: Upload, index: int) -> ChunkWriter:
        ...

    async def merge(self, upload: Upload, version: int,
                    progress: Progress | None = None) -> StagedFile:
        """Concatenate every chunk in order into a staged file, computing its
        MD5. Nothing is visible at the final key yet. ``upload.chunks`` holds
        the recorded chunk records (frozen: the upload is merging); ``progress``
        gets the bytes merged so far. Raises ``MissingChunkData`` for recorded
        chunks whose bytes are not there."""

    async def publish(self, staged: StagedFile) -> None:
        """Move the staged file to its final key atomically."""

    async def discard(self, staged: StagedFile) -> None:
        ...

    async def staged_exists(self, staged: StagedFile) -> bool:
        """Whether a staged file is still waiting to be published (a crash
        between recording ``completed`` and ``publish``)."""

    async def delete_chunks(self, upload_id: str) -> None:
        """Remove every temp chunk of the upload (absent is fine)."""

    async def delete_upload(self, upload: Upload) -> None:
        """Remove everything the backend holds of the upload: its chunks and
        its file, wherever a merge may have put it (absent is fine)."""

    async def file_size(self, key: str) -> int | None:
        """Size of a published file, None when it is not there."""

    def read_file(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of a published file, in pieces."""

    async def temp_upload_ids(self) -> list[str]:
        """Ids that have temp chunk data, for the orphan sweep."""

    async def recover(self, older_than: float = 0.0) -> int:
        """Remove partial files of crashed writers untouched for
        ``older_than`` seconds; return how many."""


# -- optional capabilities ---------------------------------------------------
# A backend may implement any of these as well. ``uploader.features`` looks
# for them once, when the runtime is wired; nothing else checks isinstance.


@dataclass(frozen=True)
class PartLimits:
    """What a backend accepts as one chunk, checked at init (S3: 5 MiB to
    5 GiB per part except the last, at most 10,000 parts)."""

    min_part_size: int
    max_part_size: int
    max_parts: int


@runtime_checkable
class UploadHooks(Protocol):
    """A backend that constrains and prepares each upload at init."""

    def part_limits(self) -> PartLimits:
        ...

    async def create_upload(self, upload: Upload) -> dict[str, Any] | None:
        """Prepare the backend for a new upload (S3: CreateMultipartUpload);
        the returned JSON-able state is stored as ``upload.backend_state``
        and handed back with every later call."""


@dataclass
class StoredPart:
    index: int
    size: int
    etag: str  # without quotes; the part's MD5 hex unless SSE-KMS/C is on


@runtime_checkable
class PresignedUploads(Protocol):
    """Clients send chunk bytes straight to the object store. The store is
    then the truth about which chunks arrived: ``list_parts`` (paginated)."""

    @property
    def direct(self) -> bool:
        """Whether direct uploads are switched on in the config."""

    @property
    def upload_origin(self) -> str | None:
        """scheme://host[:port] the presigned URLs point at (the page's CSP)."""

    async def presign_part(self, upload: Upload, index: int,
                           md5: str | None) -> dict[str, Any]:
        """``{"url", "method", "headers", "expires_in"}`` for one chunk's PUT;
        with ``md5`` the signature pins the chunk's Content-MD5."""

    async def list_parts(self, upload: Upload) -> list[StoredPart] | None:
        """Every part held, or None when the multipart upload is gone
        (completed or aborted)."""

    async def parts_open(self, upload: Upload) -> bool:
        """Whether the object store still takes parts of this upload (one
        cheap request; False once it was completed or aborted)."""

    def verifies_parts(self, upload: Upload) -> bool:
        """Whether complete checks this upload by its parts' signed MD5s
        (nothing read back): each part URL then needs its MD5, and the
        caller records it (``MetadataStore.record_signed_parts``)."""


@runtime_checkable
class PresignedDownloads(Protocol):
    async def download_url(self, key: str, content_disposition: str) -> str | None:
        """A short-lived URL of the published file, or None to stream it."""


@runtime_checkable
class IncrementalMerge(Protocol):
    """The backend folds chunks into the merged file while they arrive (fed
    by its chunk writers' ``commit``), so ``merge`` has little left to do.
    Purely an optimisation: ``merge`` gives the same result without it."""

    def merged_ahead(self, upload_id: str) -> int:
        """Bytes already merged ahead of ``complete`` in this process."""


@runtime_checkable
class SpaceReporting(Protocol):
    """Free bytes where chunks are written (a local disk; S3 has no such
    limit of ours)."""

    async def free_bytes(self) -> int:
        ...


@runtime_checkable
class StagedMerges(Protocol):
    """A backend whose merges leave a staged file before publishing: after a
    crash between recording ``completed`` and ``publish``, recovery finds
    them here, and removes those that can never be published."""

    async def partial_merges(self) -> list[PartialMerge]:
        """Every staged merge file and incremental fold file."""

    async def remove_partial(self, partial: PartialMerge) -> None:
        """Remove one; one already gone is fine."""
