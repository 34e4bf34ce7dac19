"""Plain data of an upload, shared by every layer (no I/O here)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from .errors import with_retryable

IN_PROGRESS = "in_progress"
MERGING = "merging"
COMPLETED = "completed"
FAILED = "failed"
ABORTED = "aborted"
STATUSES = (IN_PROGRESS, MERGING, COMPLETED, FAILED, ABORTED)
# Uploads the expiry sweep may remove once idle past the TTL.
EXPIRABLE = (IN_PROGRESS, FAILED)
# Upload.verified of a direct upload completed without reading it back.
PARTS_VERIFIED = "parts"


def utcnow() -> datetime:
    """Naive UTC with microseconds: what DATETIME(6) stores in both databases."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def isoformat(ts: datetime) -> str:
    return ts.replace(tzinfo=timezone.utc).isoformat().replace("+00:00", "Z")


def chunk_count(size: int, chunk_size: int) -> int:
    return math.ceil(size / chunk_size) if size else 0


@dataclass
class ChunkRecord:
    index: int
    size: int
    md5: str
    received_at: datetime = field(default_factory=utcnow)


@dataclass
class TusState:
    """What the tus endpoint keeps of an upload (docs/tus.md); None for uploads
    made through our own API."""

    # "partial" or "final" (concatenation), else None.
    concat: str | None = None
    # A final upload's partial upload ids, in order.
    parts: list[str] = field(default_factory=list)
    # Created without a length (Upload-Defer-Length); size is 0 until declared.
    deferred: bool = False
    # Upload-Metadata as the client sent it (decoded), echoed on HEAD.
    metadata: dict[str, str] = field(default_factory=dict)
    # The durable bytes of chunk ``tail_index`` short of its end.
    tail_index: int = 0
    tail_size: int = 0
    tail_md5: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "TusState":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})


@dataclass
class Upload:
    upload_id: str
    owner: str
    filename: str
    size: int
    chunk_size: int
    total_chunks: int
    md5: str | None
    status: str
    created_at: datetime
    updated_at: datetime
    merge_version: int = 0
    storage_key: str | None = None
    # Sorted indices of the chunks recorded so far (filled by the store).
    received: list[int] = field(default_factory=list)
    # The chunk records themselves, when a caller loaded them (a merge does:
    # the storage checks what it folded ahead against them).
    chunks: list[ChunkRecord] | None = None
    # index -> the MD5 its direct part URL was last signed for, when a
    # caller loaded them (a merge of a direct upload does).
    signed_parts: dict[int, str] | None = None
    # Newest chunk arrival: activity that counts for expiry besides updated_at.
    last_chunk_at: datetime | None = None
    # Last merge failure, e.g. a whole-file checksum mismatch (JSON-able).
    error: dict[str, Any] | None = None
    # What the storage backend keeps from init on (S3: the multipart
    # UploadId); JSON-able, never shown to clients.
    backend_state: dict[str, Any] | None = None
    tus: TusState | None = None
    # Client metadata (string keys and values, bounded: metadata.py); set at
    # init, never changed afterwards.
    metadata: dict[str, str] = field(default_factory=dict)
    # Bytes a running merge got through, as last reported by whichever
    # process runs it (the merge queue); shown while merging, never stored.
    merged_bytes: int | None = None
    # How the completed file was verified: None when the server hashed all
    # of it (md5 is then the file's), PARTS_VERIFIED for a direct upload
    # checked part by part (docs/s3.md): the server never saw the whole
    # file, so md5 holds only what the client claimed.
    verified: str | None = None

    @property
    def size_known(self) -> bool:
        return self.tus is None or not self.tus.deferred

    def chunk_length(self, index: int) -> int:
        """Bytes in chunk ``index``: chunk_size except for a shorter last one."""
        start = index * self.chunk_size
        return min(self.chunk_size, self.size - start)

    def missing(self) -> list[int]:
        have = set(self.received)
        return [i for i in range(self.total_chunks) if i not in have]

    @property
    def last_activity(self) -> datetime:
        if self.last_chunk_at and self.last_chunk_at > self.updated_at:
            return self.last_chunk_at
        return self.updated_at

    def replace(self, **changes: Any) -> "Upload":
        return dataclasses.replace(self, **changes)

    def to_json(self, ttl_seconds: int | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "upload_id": self.upload_id,
            "filename": self.filename,
            "size": self.size if self.size_known else None,
            "chunk_size": self.chunk_size,
            "total_chunks": self.total_chunks,
            "md5": self.md5,
            "status": self.status,
            "received": self.received,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.last_activity),
            "expires_at": None,
            "metadata": self.metadata,
        }
        if ttl_seconds is not None and self.status in EXPIRABLE:
            doc["expires_at"] = isoformat(self.last_activity + timedelta(seconds=ttl_seconds))
        if self.status == COMPLETED:
            doc["location"] = f"/files/{self.upload_id}"
            if self.verified == PARTS_VERIFIED:
                # md5 stays what the server computed itself: nothing, here.
                doc["md5"] = None
                doc["verified"] = PARTS_VERIFIED
                if self.md5:
                    doc["md5_claimed"] = self.md5
        if self.error:
            doc["error"] = with_retryable(self.error)
        return doc
