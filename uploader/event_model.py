"""What an event is, and the one JSON document every sink delivers.

An event is built before the change it reports and written by the store in
the same transaction, only if the change applies: a rolled-back or refused
change leaves no event, a committed one always has its event.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .models import Upload, isoformat, utcnow

CREATED = "upload.created"
COMPLETED = "upload.completed"
FAILED = "upload.failed"
DELETED = "upload.deleted"
EXPIRED = "upload.expired"
EVENT_TYPES = (CREATED, COMPLETED, FAILED, DELETED, EXPIRED)


@dataclass(frozen=True)
class Event:
    """One lifecycle event as written to the outbox."""

    event_id: str
    type: str
    upload_id: str
    occurred_at: datetime
    payload: str  # the JSON document delivered, exactly as signed and sent
    # Written already dispatched: there is no sink to hand it to (no stream,
    # no webhook), so no dispatcher pass (two more commits) follows the change.
    dispatched: bool = False


@dataclass(frozen=True)
class OutboxEvent:
    """An event read back from the outbox by the dispatcher."""

    seq: int
    event_id: str
    type: str
    upload_id: str
    occurred_at: datetime
    payload: str


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex


def make_event(event_type: str, upload: Upload, upload_doc: dict[str, Any],
               at: datetime | None = None) -> Event:
    """``upload_doc`` is the upload object of the API as it is after the
    change (the service renders it); the chunk list is left out: it is
    implied by the status and would make completed events of large uploads
    tens of kilobytes."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    at = at or utcnow()
    event_id = new_event_id()
    upload_doc = {k: v for k, v in upload_doc.items() if k not in ("received", "merged_bytes")}
    document = {
        "id": event_id,
        "type": event_type,
        "timestamp": isoformat(at),
        "data": {"owner": upload.owner, "upload": upload_doc},
    }
    return Event(event_id=event_id, type=event_type, upload_id=upload.upload_id,
                 occurred_at=at,
                 payload=json.dumps(document, separators=(",", ":"), ensure_ascii=False))
