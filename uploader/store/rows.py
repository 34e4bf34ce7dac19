"""Row <-> model conversion shared by the SQL stores."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Sequence

from ..models import TusState, Upload


def upload_from_row(row: Sequence[Any], parse_ts: Any = None) -> Upload:
    conv = parse_ts or (lambda v: v)
    (upload_id, owner, filename, size, chunk_size, total_chunks, md5, status,
     merge_version, storage_key, last_error, created_at, updated_at, backend_state, tus,
     metadata, verified) = row
    return Upload(
        upload_id=upload_id, owner=owner, filename=filename, size=int(size),
        chunk_size=int(chunk_size), total_chunks=int(total_chunks), md5=md5,
        status=status, merge_version=int(merge_version), storage_key=storage_key,
        error=json.loads(last_error) if last_error else None,
        created_at=conv(created_at), updated_at=conv(updated_at),
        backend_state=json.loads(backend_state) if backend_state else None,
        tus=TusState.from_json(json.loads(tus)) if tus else None,
        metadata=json.loads(metadata) if metadata else {},
        verified=verified,
    )


def upload_params(u: Upload, fmt_ts: Any = None) -> tuple[Any, ...]:
    conv = fmt_ts or (lambda v: v)
    return (u.upload_id, u.owner, u.filename, u.size, u.chunk_size, u.total_chunks, u.md5,
            u.status, u.merge_version, u.storage_key, dump_error(u.error),
            conv(u.created_at), conv(u.updated_at),
            json.dumps(u.backend_state) if u.backend_state else None, dump_tus(u.tus),
            json.dumps(u.metadata, ensure_ascii=False) if u.metadata else None, u.verified)


def dump_tus(tus: TusState | None) -> str | None:
    return json.dumps(tus.to_json()) if tus is not None else None


def dump_error(error: dict | None) -> str | None:
    return json.dumps(error) if error else None


def ts_to_text(ts: datetime) -> str:
    # Fixed width, so text order is time order in SQLite.
    return ts.strftime("%Y-%m-%d %H:%M:%S.%f")


def parse_ts(value: str) -> datetime:
    # fromisoformat reads ts_to_text's fixed width ten times faster than
    # strptime (every chunk PUT reads its upload's row under the lock);
    # strptime stays for any other width %f allows.
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f")


def text_to_ts(value: str | None) -> datetime | None:
    return parse_ts(value) if value else None
